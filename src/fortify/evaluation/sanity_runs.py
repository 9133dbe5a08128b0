"""The extra attacks the sanity checks (Carlini et al. 2019) need, and their verdicts.

`fortify.evaluation.sanity` judges; this module runs what it judges: PGD at a large eps, PGD with more
steps and restarts, sign noise at the headline eps, the gradient-free component's finds, unbounded CW,
and white-box against transfer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from fortify.attacks import AttackSpec, attack_defaults, spec_name
from fortify.evaluation import sanity
from fortify.evaluation.attack_runs import AttackOutcome, AttackRunner, accuracy
from fortify.evaluation.attack_set import (
    default_pgd_spec,
    for_evaluation,
    is_cw,
    spec_at_eps,
    threat_model_dict,
)
from fortify.evaluation.batches import (
    predict,
    sign_noise,
)
from fortify.fileio import read_json, write_json


def gradient_free_check(ctx: AttackRunner, specs, outcomes: dict[str, AttackOutcome]) -> dict | None:
    """Samples only Square (inside `strong`) fooled, that every L-inf gradient attack left robust."""
    for key, outcome in outcomes.items():
        run = outcome.run
        if run is None or "square" not in run.components or run.fooled_by is None:
            continue
        sq = run.components.index("square")
        eps = specs[key].params["eps"]
        gradient_keys = [
            k
            for k, s in specs.items()
            if k != key and not is_cw(s) and (threat_model_dict(s) or {}) == {"norm": "linf", "eps": eps}
        ]
        only_square = (run.fooled_by == sq) & (outcomes[key].pred != ctx.y)
        for k in gradient_keys:
            only_square &= outcomes[k].pred == ctx.y
        return sanity.gradient_free_not_stronger(len(ctx.y), int(only_square.sum()), [key, *gradient_keys])
    return None


@dataclass
class SanityInputs:
    """What the sanity checks (Carlini et al. 2019) judge, and the budgets of the attacks they add."""

    ctx: AttackRunner  # runs the extra attacks
    specs: dict[str, AttackSpec]  # the headline attacks, keyed
    outcomes: dict[str, AttackOutcome]  # their results.json entries, predictions and runs
    curves: dict[str, dict]
    large_eps: float  # PGD at this eps must leave (almost) nothing robust
    steps_factor: int  # PGD with this many times the steps must not gain much
    restarts: int  # ... and at least this many restarts
    transfer: Sequence[dict]  # evaluate_transfer pairs targeting this model


def run_sanity_checks(inputs: SanityInputs) -> tuple[list[dict], dict[str, dict]]:
    """Run the extra attacks the checks need and return (checks, what was run with its numbers)."""
    ctx, specs, outcomes = inputs.ctx, inputs.specs, inputs.outcomes
    checks: list[dict] = []
    runs: dict[str, dict] = {}
    by_name = {s.name: k for k, s in reversed(list(specs.items()))}  # first key per attack name
    acc = {k: o.entry["accuracy"] for k, o in outcomes.items()}
    clean_acc = accuracy(ctx.y, ctx.clean_pred)
    linf_keys = [k for k, s in specs.items() if (threat_model_dict(s) or {}).get("norm") == "linf"]

    for key, curve in inputs.curves.items():
        # A cumulative curve cannot rise (an image fooled once stays fooled), so only an independent
        # one is judged here; the far end of either is judged by the large-eps run below.
        if not curve.get("cumulative"):
            undermined = [k for k, s in specs.items() if s.name == curve["attack"]]
            checks.append(sanity.non_increasing_in_eps(key, curve["points"], undermined))

    pgd_key = by_name.get("pgd")
    pgd_spec = specs[pgd_key] if pgd_key else for_evaluation(default_pgd_spec())
    # Drop a fixed step size: alpha tuned for 2/255 would never reach the large ball's far side.
    base = {k: v for k, v in pgd_spec.params.items() if k != "alpha"}
    # Start from the clean image: a random start in a ball this large is uniform noise over the whole
    # [0,1] cube, where the CT models' gradients carry no signal (measured on IQ-OTH/NCCD: 51.9% "robust"
    # from noise starts, 0.0% from the clean image at eps=1.0, same model and steps).
    base["random_start"] = False
    big = spec_at_eps(replace(pgd_spec, params={**base, "norm": "linf"}), float(inputs.large_eps))
    big_acc, big_s = ctx.accuracy(big, f"sanity {big}")
    runs["large_eps"] = {"spec": str(big), "accuracy": big_acc, "seconds": big_s}
    checks.append(sanity.near_zero_at_large_eps(str(big), big_acc, list(specs)))

    if pgd_key and "fgsm" in by_name:
        checks.append(
            sanity.no_weaker_than(pgd_key, acc[pgd_key], by_name["fgsm"], acc[by_name["fgsm"]], [pgd_key])
        )
    if "strong" in by_name and pgd_key:
        sk = by_name["strong"]
        checks.append(sanity.no_weaker_than(sk, acc[sk], pgd_key, acc[pgd_key], [sk]))

    if pgd_key:
        params = {**attack_defaults("pgd"), **pgd_spec.params}
        steps = int(params["steps"]) * inputs.steps_factor
        more = pgd_spec.replace(steps=steps, restarts=max(inputs.restarts, int(params["restarts"])))
        more_acc, more_s = ctx.accuracy(more, f"sanity {more}", seed=ctx.seed + 1)
        runs["more_steps"] = {"spec": str(more), "accuracy": more_acc, "seconds": more_s}
        checks.extend(
            sanity.more_iterations_stable(str(pgd_spec), acc[pgd_key], str(more), more_acc, [pgd_key])
        )

    ref_key = by_name.get("strong") or pgd_key or (linf_keys[0] if linf_keys else None)
    ref_tm = threat_model_dict(specs[ref_key]) if ref_key else None
    if ref_key and ref_tm and ref_tm["norm"] == "linf":
        gen = torch.Generator().manual_seed(ctx.seed)
        noisy = sign_noise(ctx.x, ref_tm["eps"], gen)
        noise_pred, _ = predict(ctx.model, noisy, ctx.score_rt, ctx.batch_size)
        noise_acc = accuracy(ctx.y, noise_pred)
        runs["random_noise"] = {"eps": ref_tm["eps"], "accuracy": noise_acc}
        checks.append(
            sanity.noise_much_weaker(ref_key, clean_acc, acc[ref_key], noise_acc, ref_tm["eps"], [ref_key])
        )

    gradient_free = gradient_free_check(ctx, specs, outcomes)
    if gradient_free is not None:
        checks.append(gradient_free)
    cw_key = by_name.get("cw")
    if cw_key:
        checks.append(
            sanity.unbounded_cw_succeeds(outcomes[cw_key].entry.get("cw_unbounded_success_rate"), [cw_key])
        )

    checks.extend(transfer_checks(specs, inputs.transfer))
    return checks, runs


def transfer_checks(specs: dict[str, AttackSpec], pairs: Sequence[dict]) -> list[dict]:
    """ "white-box no weaker than transfer" for each `evaluate_transfer` pair targeting this model."""
    return [
        sanity.white_box_no_weaker_than_transfer(
            pair["white_box_accuracy"],
            pair["transfer_accuracy"],
            pair.get("source", "source"),
            pair["attack"],
            [k for k, s in specs.items() if s.name == spec_name(pair["attack"])],
        )
        for pair in pairs
    ]


def add_transfer_checks(results_json: str | Path, pairs: Sequence[dict]) -> dict:
    """Append transfer sanity checks to an existing results.json (rewritten atomically).

    The pipeline evaluates both checkpoints before it runs transfer; this lets it attach the
    "white-box no weaker than transfer" check to the target's results afterwards. Pairs already
    recorded (same check detail) are not added twice.
    """
    path = Path(results_json)
    results = read_json(path)
    specs = {k: AttackSpec(spec_name(v["spec"]), dict(v["params"])) for k, v in results["attacks"].items()}
    seen = {(c["check"], c["detail"]) for c in results["sanity"]}
    for check in transfer_checks(specs, pairs):
        if (check["check"], check["detail"]) not in seen:
            results["sanity"].append(check)
    write_json(path, results)
    return results
