"""`evaluate_checkpoint`: every number of the study's Table 1 and what a reviewer would ask for.

One checkpoint, its test split, a list of attacks at a headline budget. Writes
`out_dir/examples.safetensors` then `out_dir/results.json` (the layout is pinned in
docs/results-schema.md), both atomically and only at the very end, so a failed or interrupted
evaluation leaves no results.json behind.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from fortify import __version__
from fortify.attacks import AttackSpec, attack_defaults, parse_spec
from fortify.data.sentinel import sentinel_warning
from fortify.errors import ConfigError
from fortify.evaluation import sanity
from fortify.evaluation.batches import (
    AttackRun,
    attack_dataset_detailed,
    count_passes,
    cw_dataset,
    predict,
    sign_noise,
)
from fortify.evaluation.examples import example_indices, write_examples
from fortify.evaluation.inputs import (
    TestSet,
    check_checkpoint_path,
    checkpoint_record,
    open_model,
    open_test_set,
)
from fortify.evaluation.metrics import (
    INTERVAL,
    classification_metrics,
    median,
    perturbation_norms,
    perturbation_stats,
    success_rate,
    worst_case_predictions,
)
from fortify.evaluation.settings import DEFAULTS
from fortify.evaluation.specs import (
    COMBINED_ATTACKS,
    DEFAULT_CURVE_ATTACKS,
    DEFAULT_EPS,
    FULL_STRENGTH,
    STRONG_DEFAULTS,
    default_attack_specs,
    default_pgd_spec,
    for_evaluation,
    is_cw,
    keyed_specs,
    spec_at_eps,
    threat_model_dict,
)
from fortify.evaluation.specs import (
    curve_specs as parse_curve_specs,
)
from fortify.fileio import read_json, write_json
from fortify.models.contract import ContractModel
from fortify.models.fuse import fold_batchnorm
from fortify.progress import tasks as progress_tasks
from fortify.runtime import Runtime, seed_everything

DEFAULT_EPS_CURVE = tuple(float(e) for e in DEFAULTS.eps_curve)
RESULTS_FORMAT = "fortify-results/1"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _harmful_pair(classes: Sequence[str]) -> tuple[int, int] | None:
    """(malignant, normal) indices: the mistake that sends a cancer patient home."""
    if "malignant" in classes and "normal" in classes:
        return classes.index("malignant"), classes.index("normal")
    return None


def _count_pair(labels: torch.Tensor, preds: torch.Tensor, pair: tuple[int, int]) -> int:
    return int(((labels == pair[0]) & (preds == pair[1])).sum())


def _accuracy(labels: torch.Tensor, preds: torch.Tensor) -> float:
    return float((preds == labels).double().mean()) if len(labels) else float("nan")


def evaluate_checkpoint(
    checkpoint: str | Path | ContractModel,
    *,
    data: str | Path,
    split: str | Path | None = None,
    attacks: Sequence[str] | None = None,
    out_dir: str | Path | None = None,
    eps: float = DEFAULT_EPS,
    eps_curve: Sequence[float] = DEFAULT_EPS_CURVE,
    curve_attacks: Sequence[str] = DEFAULT_CURVE_ATTACKS,
    runtime: Runtime | None = None,
    batch_size: int = DEFAULTS.batch_size,
    progress: bool = True,
    limit: int | None = DEFAULTS.limit,
    examples_per_class: int = DEFAULTS.examples_per_class,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    large_eps: float = 1.0,
    sanity_steps_factor: int = DEFAULTS.sanity_steps_factor,
    sanity_restarts: int = DEFAULTS.sanity_restarts,
    transfer: Sequence[dict] | None = None,
    score_precision: str = DEFAULTS.score_precision,
    fold_bn: bool = DEFAULTS.fold_bn,
    curve_cumulative: bool = DEFAULTS.curve_cumulative,
) -> dict:
    """Evaluate `checkpoint` on the test split; return results.json's dict (and write it to out_dir).

    `attacks` are spec strings (default: `default_attack_specs(eps, ...)`), `curve_attacks` spec
    templates whose eps is replaced by each value of `eps_curve` (their own step budgets, e.g.
    "pgd:steps=10"). `transfer` takes `evaluate_transfer` results whose target is this checkpoint
    to add the "white-box no weaker than transfer" check. `score_precision` ("fp32", "bf16" or
    "attack" = the runtime's) is the precision every reported prediction is made in. `fold_bn` attacks
    and scores a copy of the model with batch norm folded into its convolutions (the same function in
    eval mode, cheaper per step; `fortify.models.fuse`). `curve_cumulative` attacks, at each eps of a
    curve, only the images still robust at the smaller ones (see `_curves`). An image the clean model
    misclassifies is never attacked: it counts as fooled, unperturbed. `checkpoint` may also be a model from
    elsewhere behind its input contract (`fortify.models.load_external_model`, `wrap_module`): it is
    evaluated on a fresh default split (or `split`) and its contract is recorded with the results.
    """
    started = time.perf_counter()
    ev = _open(
        checkpoint,
        data,
        split=split,
        attacks=attacks,
        curve_attacks=curve_attacks,
        eps=eps,
        runtime=runtime,
        score_precision=score_precision,
        fold_bn=fold_bn,
        limit=limit,
        progress=progress,
        cache_dir=cache_dir,
    )
    # Scores are computed at `score_precision` (fp32 by default) whatever precision the attacks ran in:
    # a bf16 verdict near the decision boundary can differ from the fp32 one (see `_settle`).
    clean_pred, clean_prob = predict(ev.model, ev.x, ev.score_rt, batch_size)
    with progress_tasks(progress) as start:
        ctx = _Context(ev.model, ev.x, ev.y, clean_pred, ev.runtime, ev.score_rt, batch_size, seed, start)
        outcomes = {key: _attack(ctx, key, spec, ev.classes) for key, spec in ev.specs.items()}
        with count_passes(ev.model) as curve_count:
            curves, curve_seconds = _curves(ctx, ev.curve_specs, eps_curve, curve_cumulative)
        with count_passes(ev.model) as sanity_count:
            checks, sanity_runs = _sanity(
                _SanityInputs(
                    ctx=ctx,
                    specs=ev.specs,
                    outcomes=outcomes,
                    curves=curves,
                    large_eps=large_eps,
                    steps_factor=sanity_steps_factor,
                    restarts=sanity_restarts,
                    transfer=transfer or [],
                )
            )

    results = _record(ev, checkpoint, eps, seed, clean_pred, outcomes)
    worst_blocks, worst = _worst_case(ev, clean_pred, outcomes)
    results.update(worst_blocks)
    results["passes"] = _passes(outcomes, curve_count.as_dict(), sanity_count.as_dict())
    results["per_sample"] = _per_sample(ev, clean_pred, outcomes, worst)
    results["curves"] = curves
    results["sanity"] = checks
    results["sanity_runs"] = sanity_runs
    if transfer:
        results["transfer"] = [dict(pair) for pair in transfer]
    indices = example_indices(ev.y, examples_per_class)
    results["examples"] = {"file": "examples.safetensors", "indices": indices, "attacks": list(ev.specs)}
    results["config"] = {
        "data": str(data),
        "split": None if split is None else str(split),
        "attacks": [str(s) for s in ev.specs.values()],
        "eps": eps,
        "eps_curve": [float(e) for e in eps_curve],
        "curve_attacks": [str(s) for s in ev.curve_specs.values()],
        "curve_cumulative": curve_cumulative,
        "batch_size": batch_size,
        "limit": limit,
        "examples_per_class": examples_per_class,
        "large_eps": large_eps,
        "sanity_steps_factor": sanity_steps_factor,
        "sanity_restarts": sanity_restarts,
        "score_precision": score_precision,
        "fold_bn": ev.fold_bn,
        "curve_seconds": curve_seconds,
    }
    results["seconds_total"] = time.perf_counter() - started
    if out_dir is not None:
        _write(Path(out_dir), results, ev, indices, clean_pred, clean_prob, outcomes)
    return results


@dataclass
class _Evaluation:
    """A loaded evaluation: the model to attack, its test set and the parsed attacks."""

    model: torch.nn.Module  # prepared for the runtime, in eval mode (batch norm folded if asked)
    info: dict  # the checkpoint's record (classes, image size, ...)
    test: TestSet
    classes: list[str]
    x: torch.Tensor
    y: torch.Tensor
    specs: dict[str, AttackSpec]  # the headline attacks, keyed
    curve_specs: dict[str, AttackSpec]  # templates whose eps each point of a curve replaces
    runtime: Runtime  # attacks run here (autocast as configured)
    score_rt: Runtime  # predictions are scored here (fp32 by default)
    fold_bn: bool  # whether batch norm was folded (never for TorchScript or exported programs)


def _open(
    checkpoint: str | Path | ContractModel,
    data: str | Path,
    *,
    split: str | Path | None,
    attacks: Sequence[str] | None,
    curve_attacks: Sequence[str],
    eps: float,
    runtime: Runtime | None,
    score_precision: str,
    fold_bn: bool,
    limit: int | None,
    progress: bool,
    cache_dir: str | Path | None,
) -> _Evaluation:
    """Check the arguments and parse every spec, then load the model and its test split."""
    if score_precision not in ("fp32", "bf16", "attack"):
        raise ConfigError(f"score precision must be fp32, bf16 or attack, got {score_precision!r}")
    external = isinstance(checkpoint, ContractModel)
    if not external:
        check_checkpoint_path(checkpoint)
    # TorchScript and exported programs cannot be traced by torch.fx: they are attacked as they are.
    fold_bn = fold_bn and not (external and checkpoint.contract.source in ("torchscript", "export"))
    # Parse every spec before loading anything: a typo must cost nothing.
    user_specs = keyed_specs(attacks) if attacks else None
    curve_specs = parse_curve_specs(curve_attacks)
    runtime = runtime or Runtime.resolve()

    model, info, ref = open_model(checkpoint, device="cpu")
    if fold_bn:
        model = fold_batchnorm(model)
    model = runtime.prepare_model(model).eval()
    test = open_test_set(data, info, ref, split=split, limit=limit, progress=progress, cache_dir=cache_dir)
    x, y = test.dataset.tensors()
    specs = user_specs or keyed_specs(
        default_attack_specs(eps, image_size=int(info["image_size"]), in_channels=int(info["in_channels"]))
    )
    score_rt = runtime if score_precision == "attack" else replace(runtime, precision=score_precision)
    return _Evaluation(
        model, info, test, list(test.dataset.classes), x, y, specs, curve_specs, runtime, score_rt, fold_bn
    )


@dataclass
class AttackOutcome:
    """One headline attack over the test set: its results.json entry and what the later steps read."""

    entry: dict  # results["attacks"][key]
    pred: torch.Tensor  # the scorer's predictions on x_adv
    prob: torch.Tensor
    x_adv: torch.Tensor
    run: AttackRun | None  # kept when it records which component fooled each image (`strong`)


def _attack(ctx: _Context, key: str, spec: AttackSpec, classes: list[str]) -> AttackOutcome:
    """Run one headline attack, settle its verdicts at the scoring precision and score it."""
    seed_everything(ctx.seed)
    advance = ctx.start(f"attack {key}", len(ctx.x) if is_cw(spec) else ctx.n_attacked())
    t0 = time.perf_counter()
    extra: dict = {}
    kept: AttackRun | None = None
    with count_passes(ctx.model) as count:  # every model call the attack makes, per image
        if is_cw(spec):
            x_adv, book, extra = _cw_attack(ctx, spec, advance)
        else:
            run = ctx.run(spec, advance)
            x_adv, book = _settle(
                spec, ctx.model, ctx.x, ctx.y, run, ctx.runtime, ctx.score_rt, ctx.batch_size, ctx.seed
            )
            if run.fooled_by is not None:
                kept = run
    seconds = time.perf_counter() - t0
    pred, prob = predict(ctx.model, x_adv, ctx.score_rt, ctx.batch_size)
    fooled = (ctx.clean_pred == ctx.y) & (pred != ctx.y)
    l2, linf = perturbation_norms(ctx.x, x_adv)
    entry = {
        "spec": str(spec),
        "params": dict(spec.params),
        "threat_model": threat_model_dict(spec),
        **classification_metrics(ctx.y, pred, classes),
        "success_rate": success_rate(ctx.y, ctx.clean_pred, pred),
        "perturbation": perturbation_stats(l2, linf, fooled),
        **extra,
        **book,
        **count.as_dict(),
        "seconds": seconds,
    }
    return AttackOutcome(entry, pred, prob, x_adv, kept)


def _cw_attack(ctx: _Context, spec: AttackSpec, advance: Callable) -> tuple[torch.Tensor, dict, dict]:
    """CW-L2 settled at the scoring precision: (x_adv within the L2 budget, bookkeeping, CW's own numbers)."""
    clean_correct = ctx.clean_pred == ctx.y
    run, book = _settle_cw(
        spec, ctx.model, ctx.x, ctx.y, ctx.runtime, ctx.score_rt, ctx.batch_size, ctx.seed, advance
    )
    budget = spec.params.get("max_l2")
    within = run.success & (run.l2 <= float(budget)) if budget is not None else run.success
    x_adv = torch.where(within.view(-1, 1, 1, 1), run.x_adv, ctx.x)
    unbounded_ok = run.success & clean_correct
    extra = {
        "cw_median_l2": median(run.l2[unbounded_ok]),
        "cw_unbounded_success_rate": (
            float(unbounded_ok.sum()) / float(clean_correct.sum()) if clean_correct.any() else None
        ),
        "l2_budget": None if budget is None else float(budget),
    }
    return x_adv, book, extra


def _record(
    ev: _Evaluation,
    checkpoint: str | Path | ContractModel,
    eps: float,
    seed: int,
    clean_pred: torch.Tensor,
    outcomes: dict[str, AttackOutcome],
) -> dict:
    """results.json's opening blocks: what was evaluated and how, the clean and attacked numbers."""
    ds, test = ev.test.dataset, ev.test
    results: dict = {
        "format": RESULTS_FORMAT,
        "fortify_version": __version__,
        "created": _now(),
        "seed": seed,
        "checkpoint": checkpoint_record(checkpoint, ev.info),
        "data": {
            "root": ds.root,
            "manifest": test.manifest,
            "split_seed": test.split_seed,
            "split": "test",
            "n": len(ds),
            "classes": ev.classes,
            "image_size": ds.image_size,
            "synthetic": bool(ds.synthetic),
        },
        "runtime": {
            **ev.runtime.describe(),
            "score_precision": ev.score_rt.precision,
            "batchnorm_folded": ev.fold_bn,
        },
        "threat_model": _headline_threat_model(ev.specs, eps),
        "interval": dict(INTERVAL),
        "budget": headline_budget(ev.specs),
        "clean": classification_metrics(ev.y, clean_pred, ev.classes),
        "attacks": {key: outcome.entry for key, outcome in outcomes.items()},
    }
    sentinel = test.sentinel
    if sentinel:
        clean_acc = results["clean"]["accuracy"]
        results["leakage_sentinel"] = {
            **sentinel,
            "model_clean_accuracy": clean_acc,
            "evaluated_n": len(ds),
            "warning": sentinel_warning(
                sentinel,
                clean_acc,
                {cls: m["sensitivity"] for cls, m in results["clean"]["per_class"].items()},
            ),
        }
    return results


def _worst_case(
    ev: _Evaluation, clean_pred: torch.Tensor, outcomes: dict[str, AttackOutcome]
) -> tuple[dict, torch.Tensor]:
    """The combined, worst_case and malignant_to_normal blocks, and the worst-case predictions."""
    y, classes = ev.y, ev.classes
    adv_preds = {key: outcome.pred for key, outcome in outcomes.items()}
    blocks: dict = {}
    combined_keys = [k for k, s in ev.specs.items() if s.name in COMBINED_ATTACKS]
    if combined_keys:
        pooled_y = y.repeat(len(combined_keys))
        pooled_pred = torch.cat([adv_preds[k] for k in combined_keys])
        blocks["combined"] = {
            "attacks": combined_keys,
            **classification_metrics(pooled_y, pooled_pred, classes),
        }
    harmful = _harmful_pair(classes)
    worst = worst_case_predictions(y, clean_pred, [adv_preds[k] for k in ev.specs], harmful)
    blocks["worst_case"] = {"attacks": list(ev.specs), **classification_metrics(y, worst, classes)}
    if harmful is not None:
        blocks["malignant_to_normal"] = {
            "clean": _count_pair(y, clean_pred, harmful),
            **{k: _count_pair(y, adv_preds[k], harmful) for k in ev.specs},
            "worst_case": _count_pair(y, worst, harmful),
        }
    return blocks, worst


def _passes(outcomes: dict[str, AttackOutcome], curve_passes: dict, sanity_passes: dict) -> dict:
    """Images through the model per stage (the headline attacks, the curves, the sanity checks) and in all."""
    attack_passes = {
        k: sum(o.entry[k] for o in outcomes.values()) for k in ("gradient_evaluations", "forward_passes")
    }
    stage_passes = {"attacks": attack_passes, "curves": curve_passes, "sanity": sanity_passes}
    return {
        **stage_passes,
        "total": {k: sum(v[k] for v in stage_passes.values()) for k in attack_passes},
        "unit": "images through the model (a batch of 64 counts 64)",
    }


def _per_sample(
    ev: _Evaluation, clean_pred: torch.Tensor, outcomes: dict[str, AttackOutcome], worst: torch.Tensor
) -> dict:
    """Each test image's path and whether it was classified correctly, clean and under each attack."""
    y = ev.y
    return {
        "paths": list(ev.test.dataset.paths),
        "correct": {
            "clean": (clean_pred == y).int().tolist(),
            **{k: (outcomes[k].pred == y).int().tolist() for k in ev.specs},
            "worst_case": (worst == y).int().tolist(),
        },
    }


def _write(
    out: Path,
    results: dict,
    ev: _Evaluation,
    indices: list,
    clean_pred: torch.Tensor,
    clean_prob: torch.Tensor,
    outcomes: dict[str, AttackOutcome],
) -> None:
    """Write examples.safetensors, then results.json (last: its presence marks a complete evaluation)."""
    write_examples(
        out / "examples.safetensors",
        indices,
        ev.x,
        ev.y,
        clean_pred,
        clean_prob,
        {k: (outcomes[k].x_adv, outcomes[k].pred, outcomes[k].prob) for k in ev.specs},
    )
    write_json(out / "results.json", results)


def _headline_threat_model(specs: dict[str, AttackSpec], eps: float) -> dict:
    """The strong attack's budget if given, else the first L-inf attack's, else the eps argument."""
    ordered = sorted(specs.values(), key=lambda s: s.name != "strong")
    for spec in ordered:
        tm = threat_model_dict(spec)
        if tm is not None and tm["norm"] == "linf":
            return tm
    return {"norm": "linf", "eps": float(eps)}


@dataclass
class _Context:
    """What every attack run of an evaluation needs (headline attacks, curves, sanity checks)."""

    model: torch.nn.Module
    x: torch.Tensor
    y: torch.Tensor
    clean_pred: torch.Tensor
    runtime: Runtime  # attacks run here (autocast as configured)
    score_rt: Runtime  # predictions are scored here (fp32 by default)
    batch_size: int
    seed: int
    start: Callable

    def n_attacked(self, todo: torch.Tensor | None = None) -> int:
        return int((self.clean_pred == self.y).sum() if todo is None else todo.sum())

    def run(
        self,
        spec: AttackSpec,
        advance: Callable,
        todo: torch.Tensor | None = None,
        start: torch.Tensor | None = None,
    ) -> AttackRun:
        """`spec` over the images where `todo` is set, every other image left at `start` and counted as
        fooled. By default `todo` is the images the clean model gets right (a misclassified image needs
        no attack: it is "fooled" unperturbed) and `start` the clean images."""
        todo = (self.clean_pred == self.y) if todo is None else todo
        x_adv = (self.x if start is None else start).clone()
        success = torch.ones(len(self.x), dtype=torch.bool)
        idx = todo.nonzero().squeeze(1)
        sub = attack_dataset_detailed(
            spec, self.model, self.x[idx], self.y[idx], self.runtime, self.batch_size, advance
        )
        x_adv[idx], success[idx] = sub.x_adv, sub.success
        fooled_by = None
        if sub.fooled_by is not None:  # `strong`: an image it never saw was fooled by none of its parts
            fooled_by = torch.full((len(self.x),), -1, dtype=sub.fooled_by.dtype)
            fooled_by[idx] = sub.fooled_by
        return AttackRun(x_adv, success, fooled_by, sub.components)

    def attack(
        self,
        spec: AttackSpec,
        label: str,
        todo: torch.Tensor | None = None,
        start: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_adv, scored predictions) of `run`, settled like the headline attacks."""
        run = self.run(spec, self.start(label, self.n_attacked(todo)), todo, start)
        x_adv, _ = _settle(
            spec, self.model, self.x, self.y, run, self.runtime, self.score_rt, self.batch_size, self.seed
        )
        pred, _ = predict(self.model, x_adv, self.score_rt, self.batch_size)
        return x_adv, pred

    def accuracy(self, spec: AttackSpec, label: str, seed: int | None = None) -> tuple[float, float]:
        """(accuracy, seconds) of one attack over the whole set, settled like the headline attacks."""
        seed_everything(self.seed if seed is None else seed)
        t0 = time.perf_counter()
        _, pred = self.attack(spec, label)
        return _accuracy(self.y, pred), time.perf_counter() - t0


def _disagreements(model, x_adv, y, success, attack_rt, score_rt, batch_size):
    """The scorer's predictions on x_adv, the bookkeeping of where they disagree with the attack's own
    success flags, and the indices to attack again (None when nothing disagrees or when the attack
    already ran at the scoring precision, where a rerun would repeat the same computation)."""
    pred, _ = predict(model, x_adv, score_rt, batch_size)
    mismatch = (pred != y) != success
    book = {"verdict_mismatches": int(mismatch.sum()), "reattacked_fp32": 0, "recovered_by_reattack": 0}
    if not mismatch.any() or attack_rt.precision == score_rt.precision:
        return pred, book, None
    return pred, book, mismatch.nonzero().squeeze(1)


def _settle(spec, model, x, y, run: AttackRun, attack_rt, score_rt, batch_size, seed):
    """Compare the attack's own success flags with the scoring precision's verdicts.

    Returns (x_adv, bookkeeping). A sample whose verdicts differ (a bf16 "fooled" that fp32 calls
    correct, or the reverse) is counted; when the attack ran in another precision than the scoring, it
    is attacked again at the scoring precision and the new example is kept if it fools the scorer.
    """
    pred, book, idx = _disagreements(model, run.x_adv, y, run.success, attack_rt, score_rt, batch_size)
    if idx is None:
        return run.x_adv, book
    seed_everything(seed)
    again = attack_dataset_detailed(spec, model, x[idx], y[idx], score_rt, batch_size)
    pred2, _ = predict(model, again.x_adv, score_rt, batch_size)
    better = (pred2 != y[idx]) & (pred[idx] == y[idx])
    x_adv = run.x_adv.clone()
    x_adv[idx[better]] = again.x_adv[better]
    if run.fooled_by is not None and again.fooled_by is not None:
        run.fooled_by[idx[better]] = again.fooled_by[better]
    book.update(reattacked_fp32=len(idx), recovered_by_reattack=int(better.sum()))
    return x_adv, book


def _settle_cw(spec, model, x, y, attack_rt, score_rt, batch_size, seed, advance):
    """CW over the set, its success flags checked (and re-attacked) at the scoring precision."""
    run = cw_dataset(spec, model, x, y, attack_rt, batch_size, advance)
    pred, book, idx = _disagreements(model, run.x_adv, y, run.success, attack_rt, score_rt, batch_size)
    if idx is None:
        return run, book
    seed_everything(seed)
    again = cw_dataset(spec, model, x[idx], y[idx], score_rt, batch_size)
    pred2, _ = predict(model, again.x_adv, score_rt, batch_size)
    ok = again.success & (pred2 != y[idx])
    run.x_adv[idx] = torch.where(ok.view(-1, 1, 1, 1), again.x_adv, x[idx])
    run.l2[idx] = torch.where(ok, again.l2, torch.full_like(again.l2, float("inf")))
    book.update(reattacked_fp32=len(idx), recovered_by_reattack=int((ok & (pred[idx] == y[idx])).sum()))
    run.success[idx] = ok
    return run, book


def headline_budget(specs: dict[str, AttackSpec]) -> dict:
    """Whether the headline `strong` attack runs at AutoAttack-standard budgets (APGD 100 steps, every
    other class targeted, Square 5000 queries). If not, its robust accuracies are upper bounds."""
    strong_specs = [s for s in specs.values() if s.name == "strong"]
    if not strong_specs:
        return {
            "full_strength": False,
            "note": "no strong (AutoAttack-style) attack was run: robust "
            "accuracies are upper bounds from weaker attacks",
        }
    params = {**STRONG_DEFAULTS, **strong_specs[0].params}
    cuts = [
        f"{name} {params[name]} < {standard}"
        for name, standard in FULL_STRENGTH.items()
        if float(params.get(name, 0)) < standard
    ]
    if not cuts:
        return {"full_strength": True, "note": "AutoAttack-standard budgets: " + _budget_text(params)}
    return {
        "full_strength": False,
        "note": f"budgets cut ({', '.join(cuts)}): robust accuracies are upper bounds; "
        + _budget_text(params),
    }


def _budget_text(params: dict) -> str:
    return (
        f"{params['version']} component set, APGD {params['steps']} steps x {params['restarts']} "
        f"restart(s), targeted on up to {params['n_target_classes']} classes, Square "
        f"{params['square_queries']} queries"
    )


def _curves(ctx: _Context, curve_specs, eps_curve, cumulative: bool = True):
    """Robust accuracy at each eps of `eps_curve` for each curve attack.

    `cumulative`: an image fooled at one eps is fooled at every larger one (its example lies in every
    larger ball), so it keeps that example and only the images still robust are attacked at the next
    eps. A point is then the share robust at every eps up to it: non-increasing by construction, for a
    deterministic attack never above the independent figure, and cheaper where most images fall.
    Otherwise every eps is attacked independently over all images.
    """
    curves: dict[str, dict] = {}
    seconds: dict[str, float] = {}
    for key, template in curve_specs.items():
        t0 = time.perf_counter()
        points = []
        robust, x_adv = ctx.clean_pred == ctx.y, ctx.x
        for e in sorted(float(v) for v in eps_curve):
            if e == 0.0:
                # eps = 0 leaves every image unchanged: the point is the clean accuracy.
                points.append([0.0, _accuracy(ctx.y, ctx.clean_pred)])
                continue
            spec, label = spec_at_eps(template, e), f"curve {key} eps={255 * e:g}/255"
            seed_everything(ctx.seed)
            if cumulative:
                x_adv, pred = ctx.attack(spec, label, todo=robust, start=x_adv)
                robust = robust & (pred == ctx.y)
                points.append([e, float(robust.double().mean())])
            else:
                points.append([e, _accuracy(ctx.y, ctx.attack(spec, label)[1])])
        tm = template.threat_model()
        template_text = str(
            AttackSpec(template.name, {k: v for k, v in template.params.items() if k != "eps"})
        )
        curves[key] = {
            "spec": template_text,
            "attack": template.name,
            "norm": tm.norm if tm else "linf",
            "points": points,
            "cumulative": cumulative,
        }
        seconds[key] = time.perf_counter() - t0
    return curves, seconds


def _gradient_free_check(ctx: _Context, specs, outcomes: dict[str, AttackOutcome]) -> dict | None:
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
class _SanityInputs:
    """What the sanity checks (Carlini et al. 2019) judge, and the budgets of the attacks they add."""

    ctx: _Context  # runs the extra attacks
    specs: dict[str, AttackSpec]  # the headline attacks, keyed
    outcomes: dict[str, AttackOutcome]  # their results.json entries, predictions and runs
    curves: dict[str, dict]
    large_eps: float  # PGD at this eps must leave (almost) nothing robust
    steps_factor: int  # PGD with this many times the steps must not gain much
    restarts: int  # ... and at least this many restarts
    transfer: Sequence[dict]  # evaluate_transfer pairs targeting this model


def _sanity(inputs: _SanityInputs) -> tuple[list[dict], dict[str, dict]]:
    """Run the extra attacks the checks need and return (checks, what was run with its numbers)."""
    ctx, specs, outcomes = inputs.ctx, inputs.specs, inputs.outcomes
    checks: list[dict] = []
    runs: dict[str, dict] = {}
    by_name = {s.name: k for k, s in reversed(list(specs.items()))}  # first key per attack name
    acc = {k: o.entry["accuracy"] for k, o in outcomes.items()}
    clean_acc = _accuracy(ctx.y, ctx.clean_pred)
    linf_keys = [k for k, s in specs.items() if (threat_model_dict(s) or {}).get("norm") == "linf"]

    for key, curve in inputs.curves.items():
        # A cumulative curve cannot rise (an image fooled once stays fooled), so only an independent
        # one is judged here; the far end of either is judged by the large-eps run below.
        if not curve.get("cumulative"):
            undermined = [k for k, s in specs.items() if s.name == curve["attack"]]
            checks.append(sanity.non_increasing_in_eps(key, curve["points"], undermined))

    pgd_key = by_name.get("pgd")
    pgd_spec = specs[pgd_key] if pgd_key else for_evaluation(parse_spec(default_pgd_spec()))
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
        noise_acc = _accuracy(ctx.y, noise_pred)
        runs["random_noise"] = {"eps": ref_tm["eps"], "accuracy": noise_acc}
        checks.append(
            sanity.noise_much_weaker(ref_key, clean_acc, acc[ref_key], noise_acc, ref_tm["eps"], [ref_key])
        )

    gradient_free = _gradient_free_check(ctx, specs, outcomes)
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
            [k for k, s in specs.items() if s.name == parse_spec(pair["attack"]).name],
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
    specs = {k: parse_spec(v["spec"]) for k, v in results["attacks"].items()}
    seen = {(c["check"], c["detail"]) for c in results["sanity"]}
    for check in transfer_checks(specs, pairs):
        if (check["check"], check["detail"]) not in seen:
            results["sanity"].append(check)
    write_json(path, results)
    return results
