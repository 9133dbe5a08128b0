"""`evaluate_checkpoint`: every number of the study's Table 1 and what a reviewer would ask for.

One checkpoint, its test split, a list of attacks at a headline budget. Writes
`out_dir/examples.safetensors` then `out_dir/results.json` (the layout is pinned in
docs/results-schema.md), both atomically and only at the very end, so a failed or interrupted
evaluation leaves no results.json behind.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from fortify.attacks import AttackSpec
from fortify.evaluation.attack_runs import AttackOutcome, AttackRunner, run_headline_attack
from fortify.evaluation.attack_set import curve_specs, default_attack_specs, keyed_specs
from fortify.evaluation.batches import count_passes, predict
from fortify.evaluation.curves import robust_accuracy_curves
from fortify.evaluation.examples import example_indices, write_examples
from fortify.evaluation.loading import TestSet, check_checkpoint_path, open_model, open_test_set
from fortify.evaluation.results_blocks import (
    opening_blocks,
    passes_block,
    per_sample_block,
    worst_case_blocks,
)
from fortify.evaluation.sanity_runs import SanityInputs, run_sanity_checks
from fortify.evaluation.settings import DEFAULTS, EvalSettings
from fortify.fileio import write_json
from fortify.models.contract import ContractModel
from fortify.models.fuse import fold_batchnorm
from fortify.progress import tasks as progress_tasks
from fortify.runtime import Runtime

DEFAULT_EPS_CURVE = tuple(float(e) for e in DEFAULTS.eps_curve)


def evaluate_checkpoint(
    checkpoint: str | Path | ContractModel,
    *,
    data: str | Path,
    settings: EvalSettings | None = None,
    split: str | Path | None = None,
    out_dir: str | Path | None = None,
    runtime: Runtime | None = None,
    progress: bool = True,
    cache_dir: str | Path | None = None,
    transfer: Sequence[dict] | None = None,
) -> dict:
    """Evaluate `checkpoint` on the test split; return results.json's dict (and write it to out_dir).

    `settings` (`EvalSettings`, default: its defaults) holds the threat model, the attacks (default:
    `default_attack_specs` in that threat model at its budgets), the eps curve and its attack templates,
    the sanity checks' budgets, the seed, `score_precision` (the precision every reported prediction is
    made in: "fp32", "bf16" or "attack" = the runtime's), `fold_bn` (attack and score a copy of the model
    with batch norm folded into its convolutions: the same function in eval mode, cheaper per step) and
    `curve_cumulative` (see `robust_accuracy_curves`). `transfer` takes `evaluate_transfer` results whose
    target is this checkpoint to add the "white-box no weaker than transfer" check. An image the clean
    model misclassifies is never attacked: it counts as fooled, unperturbed. `checkpoint` may also be a
    model from elsewhere behind its input contract (`fortify.models.load_external_model`, `wrap_module`):
    it is evaluated on a fresh default split (or `split`) and its contract is recorded with the results.
    """
    started = time.perf_counter()
    s = (settings or EvalSettings()).validate()
    ev = _open(checkpoint, data, s, split=split, runtime=runtime, progress=progress, cache_dir=cache_dir)
    # Scores are computed at `score_precision` (fp32 by default) whatever precision the attacks ran in:
    # a bf16 verdict near the decision boundary can differ from the fp32 one (see attack_runs.settle).
    clean_pred, clean_prob = predict(ev.model, ev.x, ev.score_rt, s.batch_size)
    with progress_tasks(progress) as start:
        runner = AttackRunner(
            ev.model, ev.x, ev.y, clean_pred, ev.runtime, ev.score_rt, s.batch_size, s.seed, start
        )
        outcomes = {key: run_headline_attack(runner, key, spec, ev.classes) for key, spec in ev.specs.items()}
        with count_passes(ev.model) as curve_count:
            curves, curve_seconds = robust_accuracy_curves(
                runner, ev.curve_specs, s.eps_curve, s.curve_cumulative
            )
        with count_passes(ev.model) as sanity_count:
            checks, sanity_runs = run_sanity_checks(
                SanityInputs(
                    runner,
                    ev.specs,
                    outcomes,
                    curves,
                    s.large_eps,
                    s.sanity_steps_factor,
                    s.sanity_restarts,
                    transfer or [],
                )
            )

    results = opening_blocks(ev, checkpoint, s.eps, s.seed, clean_pred, outcomes)
    worst_blocks, worst = worst_case_blocks(ev, clean_pred, outcomes)
    results.update(worst_blocks)
    results["passes"] = passes_block(outcomes, curve_count.as_dict(), sanity_count.as_dict())
    results["per_sample"] = per_sample_block(ev, clean_pred, outcomes, worst)
    results["curves"] = curves
    results["sanity"] = checks
    results["sanity_runs"] = sanity_runs
    if transfer:
        results["transfer"] = [dict(pair) for pair in transfer]
    indices = example_indices(ev.y, s.examples_per_class)
    results["examples"] = {"file": "examples.safetensors", "indices": indices, "attacks": list(ev.specs)}
    results["config"] = _config_record(s, ev, data, split, curve_seconds)
    results["seconds_total"] = time.perf_counter() - started
    if out_dir is not None:
        _write(Path(out_dir), results, ev, indices, clean_pred, clean_prob, outcomes)
    return results


def _config_record(s: EvalSettings, ev: LoadedEvaluation, data, split, curve_seconds: dict) -> dict:
    """results.json's "config": what was run, as text where it is an attack."""
    return {
        "data": str(data),
        "split": None if split is None else str(split),
        "attacks": [str(spec) for spec in ev.specs.values()],
        "eps": s.eps,
        "eps_curve": [float(e) for e in s.eps_curve],
        "curve_attacks": [str(spec) for spec in ev.curve_specs.values()],
        "curve_cumulative": s.curve_cumulative,
        "batch_size": s.batch_size,
        "limit": s.limit,
        "examples_per_class": s.examples_per_class,
        "large_eps": s.large_eps,
        "sanity_steps_factor": s.sanity_steps_factor,
        "sanity_restarts": s.sanity_restarts,
        "score_precision": s.score_precision,
        "fold_bn": ev.fold_bn,
        "curve_seconds": curve_seconds,
    }


@dataclass
class LoadedEvaluation:
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
    s: EvalSettings,
    *,
    split: str | Path | None,
    runtime: Runtime | None,
    progress: bool,
    cache_dir: str | Path | None,
) -> LoadedEvaluation:
    """Check the checkpoint's path, then load the model and its test split and key the attacks."""
    external = isinstance(checkpoint, ContractModel)
    if not external:
        check_checkpoint_path(checkpoint)
    # TorchScript and exported programs cannot be traced by torch.fx: they are attacked as they are.
    fold_bn = s.fold_bn and not (external and checkpoint.contract.source in ("torchscript", "export"))
    runtime = runtime or Runtime.resolve()

    model, info, ref = open_model(checkpoint, device="cpu")
    if fold_bn:
        model = fold_batchnorm(model)
    model = runtime.prepare_model(model).eval()
    test = open_test_set(data, info, ref, split=split, limit=s.limit, progress=progress, cache_dir=cache_dir)
    x, y = test.dataset.tensors()
    attacks = s.attacks or default_attack_specs(
        s.threat_model, s, image_size=int(info["image_size"]), in_channels=int(info["in_channels"])
    )
    score_rt = runtime if s.score_precision == "attack" else replace(runtime, precision=s.score_precision)
    return LoadedEvaluation(
        model,
        info,
        test,
        list(test.dataset.classes),
        x,
        y,
        keyed_specs(attacks),
        curve_specs(s.curve_attacks),
        runtime,
        score_rt,
        fold_bn,
    )


def _write(
    out: Path,
    results: dict,
    ev: LoadedEvaluation,
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
