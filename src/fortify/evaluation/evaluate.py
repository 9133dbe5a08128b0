"""`evaluate_checkpoint`: every number of the study's Table 1 and what a reviewer would ask for.

One checkpoint, its test split, attacks in a threat model at stated budgets. The work is cut into units
of the test set (`fortify.evaluation.units`): each is computed from its own seeds, written atomically to
`out_dir/units/` as it finishes, reused by `resume=True`, and under torchrun shared out among the
processes (rank r takes units r, r + w, ...). Rank 0 joins them, checks that every test image appears
exactly once, and writes `out_dir/examples.safetensors` then `out_dir/results.json` (the layout is pinned
in docs/results-schema.md), so an interrupted evaluation leaves no results.json behind, and its resume
gives the same results as a run that was never interrupted.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from fortify.attacks import AttackSpec
from fortify.distributed import DistInfo, init_distributed
from fortify.evaluation.adversarial_images import write_adversarial
from fortify.evaluation.attack_set import curve_specs, default_attack_specs, keyed_specs
from fortify.evaluation.examples import example_indices, write_examples
from fortify.evaluation.loading import (
    TestSet,
    check_checkpoint_path,
    checkpoint_record,
    open_model,
    open_test_set,
)
from fortify.evaluation.patient_block import add_patient_results
from fortify.evaluation.patient_run import joint_spec, run_joint
from fortify.evaluation.results_blocks import (
    opening_blocks,
    passes_block,
    per_sample_block,
    worst_case_blocks,
)
from fortify.evaluation.sanity_runs import sanity_plan
from fortify.evaluation.settings import DEFAULTS, PATIENT_FIELDS, EvalSettings
from fortify.evaluation.unit_run import Assembled, UnitPlan, assemble, run_unit
from fortify.evaluation.units import (
    UnitResult,
    UnitStore,
    assigned_units,
    compute_units,
    open_units,
    unit_slices,
)
from fortify.fileio import write_json
from fortify.models.contract import ContractModel
from fortify.models.fuse import fold_batchnorm
from fortify.progress import fmt_minutes
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
    resume: bool = False,
    on_loaded: Callable[[LoadedEvaluation], None] | None = None,
) -> dict | None:
    """Evaluate `checkpoint` on the test split; return results.json's dict (and write it to out_dir).

    `settings` (`EvalSettings`, default: its defaults) holds the threat model, the attacks (default:
    `default_attack_specs` in that threat model at its budgets), the eps curve and its attack templates,
    the sanity checks' budgets, the seed, the unit size, `score_precision` (the precision every reported
    prediction is made in: "fp32", "bf16" or "attack" = the runtime's), `fold_bn` (attack and score a copy
    of the model with batch norm folded into its convolutions: the same function in eval mode, cheaper per
    step) and `curve_cumulative` (see `unit_curves`). `transfer` takes `evaluate_transfer` results whose
    target is this checkpoint to add the "white-box no weaker than transfer" check. `resume` reuses the
    units already in `out_dir/units/` (refusing units of another configuration). An image the clean model
    misclassifies is never attacked: it counts as fooled, unperturbed. `checkpoint` may also be a model
    from elsewhere behind its input contract (`fortify.models.load_external_model`, `wrap_module`): it is
    evaluated on a fresh default split (or `split`) and its contract is recorded with the results.
    Under torchrun every process computes its share of the units and only rank 0 returns the results
    (the others return None). `on_loaded(loaded)` is called on rank 0 once the model and test set are
    loaded, before any attack (`fortify evaluate` prints its time estimate there).
    """
    started = time.perf_counter()
    s = (settings or EvalSettings()).validate()
    runtime = runtime or Runtime.resolve()
    dist = init_distributed(runtime.device.type)
    ev = _open(checkpoint, data, s, split=split, runtime=runtime, progress=progress, cache_dir=cache_dir)
    patient_attack = joint_spec(s, ev.specs, ev.classes)  # checks the patient rule before any work
    store = _open_store(out_dir, ev, s, runtime, resume, dist)  # refuses a wrong --out before any work
    if on_loaded is not None and dist.is_main:
        on_loaded(ev)
    units = unit_slices(len(ev.y), s.unit_size)
    plan = UnitPlan(
        ev.model,
        ev.x,
        ev.y,
        ev.specs,
        ev.curve_specs,
        sanity_plan(ev.specs, s),
        s,
        ev.runtime,
        ev.score_rt,
        example_indices(ev.y, s.examples_per_class),
    )
    done, reused = _run_units(plan, units, store, dist, progress and dist.is_main)
    joint = run_joint(plan, ev, patient_attack, store, dist, progress and dist.is_main)  # units over patients
    if not dist.is_main:
        return None
    joined = assemble(plan, [done[i] for i in range(len(units))], ev.classes, transfer)
    results = _results(ev, s, checkpoint, data, split, joined, transfer, plan.examples)
    add_patient_results(results, ev, joined, s.patient_rule, joint)
    results["units"] = {
        "size": s.unit_size,
        "count": len(units),
        "reused": reused,
        "processes": dist.world_size,
    }
    results["runtime"]["threads"] = torch.get_num_threads()
    results["seconds_total"] = time.perf_counter() - started
    if out_dir is not None:
        adversarial = Path(out_dir) / "adversarial.safetensors"  # before results.json, which comes last
        write_adversarial(adversarial, [done[i] for i in range(len(units))], ev, joined)
        _write(Path(out_dir), results, ev, plan.examples, joined)
    return results


def _run_units(
    plan: UnitPlan, units: list[slice], store: UnitStore | None, dist: DistInfo, progress: bool
) -> tuple[dict[int, UnitResult], int]:
    """Every unit (`compute_units`: this process's share, each reused from the store when finished
    earlier, gathered on rank 0), with the estimate corrected once the first computed unit is done."""
    mine = assigned_units(len(units), dist.rank, dist.world_size)
    todo = [i for i in mine if store is None or not store.path(i).is_file()]
    with progress_tasks(progress) as start:

        def compute(i: int, sl: slice) -> UnitResult:
            t0 = time.perf_counter()
            result = run_unit(plan, i, sl, start)
            if progress and i == todo[0] and len(todo) > 1:
                _print_remaining(time.perf_counter() - t0, sl, [units[j] for j in todo[1:]])
            return result

        return compute_units(units, compute, store, dist)


def _print_remaining(seconds: float, first: slice, rest: list[slice]) -> None:
    """The estimate corrected by the first unit: its seconds per image times the images still to do (the
    estimate before it had to guess how many images each attack would have to keep attacking)."""
    from rich.console import Console

    per_image = seconds / max(1, first.stop - first.start)
    remaining = per_image * sum(sl.stop - sl.start for sl in rest)
    Console(stderr=True).print(
        f"first unit took {seconds:.0f} s: about {fmt_minutes(remaining)} for the other {len(rest)} unit(s)"
    )


def _results(ev, s: EvalSettings, checkpoint, data, split, joined: Assembled, transfer, indices) -> dict:
    """results.json's dict, block by block."""
    outcomes, clean_pred = joined.outcomes, joined.clean_pred
    results = opening_blocks(ev, checkpoint, s.eps, s.seed, clean_pred, outcomes)
    worst_blocks, worst = worst_case_blocks(ev, clean_pred, outcomes)
    results.update(worst_blocks)
    results["passes"] = passes_block(outcomes, joined.passes["curves"], joined.passes["sanity"])
    results["per_sample"] = per_sample_block(ev, clean_pred, outcomes, worst)
    results["curves"] = joined.curves
    results["sanity"] = joined.checks
    results["sanity_runs"] = joined.sanity_runs
    if transfer:
        results["transfer"] = [dict(pair) for pair in transfer]
    results["examples"] = {"file": "examples.safetensors", "indices": indices, "attacks": list(ev.specs)}
    results["config"] = _config_record(s, ev, data, split, joined.curve_seconds)
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
        "unit_size": s.unit_size,
        "patient_rule": s.patient_rule,
        "joint_attack": None if s.joint_attack is None else str(s.joint_attack),
        "curve_seconds": curve_seconds,
    }


def _fingerprint(ev: LoadedEvaluation, s: EvalSettings, runtime: Runtime, checkpoint) -> dict:
    """What a unit's outcome depends on: a folder of units is reused only under exactly this."""

    def digest(obj) -> str:
        return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]

    return {
        "checkpoint": checkpoint_record(checkpoint, ev.info)["sha256"] or digest(ev.info),
        "test_set": digest([list(ev.test.dataset.paths), ev.y.tolist(), list(ev.test.dataset.file_hashes)]),
        "attacks": [str(spec) for spec in ev.specs.values()],
        # the patient fields name the joint units' own files (patient_run), not the image units
        "settings": digest({k: v for k, v in s.to_dict().items() if k not in ("attacks", *PATIENT_FIELDS)}),
        "seed": s.seed,
        "unit_size": s.unit_size,
        "precision": f"{runtime.precision} attacks, {ev.score_rt.precision} scores",
        "device": runtime.device.type,
        "batchnorm_folded": ev.fold_bn,
    }


def _open_store(
    out_dir, ev, s: EvalSettings, runtime: Runtime, resume: bool, dist: DistInfo
) -> UnitStore | None:
    """The units folder, checked by every process before any work, claimed by rank 0."""
    if out_dir is None:
        return None
    fingerprint = _fingerprint(ev, s, runtime, ev.checkpoint)
    return open_units(Path(out_dir) / "units", fingerprint, resume=resume, dist=dist)


@dataclass
class LoadedEvaluation:
    """A loaded evaluation: the model to attack, its test set and the keyed attacks."""

    model: torch.nn.Module  # prepared for the runtime, in eval mode (batch norm folded if asked)
    info: dict  # the checkpoint's record (classes, image size, ...)
    checkpoint: str | Path | ContractModel
    test: TestSet
    classes: list[str]
    x: torch.Tensor
    y: torch.Tensor
    specs: dict[str, AttackSpec]  # the headline attacks, keyed
    curve_specs: dict[str, AttackSpec]  # templates whose eps each point of a curve sets
    runtime: Runtime  # attacks run here (autocast as configured)
    score_rt: Runtime  # predictions are scored here (fp32 by default)
    fold_bn: bool  # whether batch norm was folded (never for TorchScript or exported programs)


def _open(
    checkpoint: str | Path | ContractModel,
    data: str | Path,
    s: EvalSettings,
    *,
    split: str | Path | None,
    runtime: Runtime,
    progress: bool,
    cache_dir: str | Path | None,
) -> LoadedEvaluation:
    """Check the checkpoint's path, then load the model and its test split and key the attacks."""
    external = isinstance(checkpoint, ContractModel)
    if not external:
        check_checkpoint_path(checkpoint)
    # TorchScript and exported programs cannot be traced by torch.fx: they are attacked as they are.
    fold_bn = s.fold_bn and not (external and checkpoint.contract.source in ("torchscript", "export"))
    model, info, ref = open_model(checkpoint, device="cpu")
    if fold_bn:
        model = fold_batchnorm(model)
    model = runtime.prepare_model(model).eval()
    test = open_test_set(
        data, info, ref, split=split, limit=s.limit, progress=progress, cache_dir=cache_dir, sentinel=True
    )
    x, y = test.dataset.tensors()
    attacks = s.attacks or default_attack_specs(
        s.threat_model, s, image_size=int(info["image_size"]), in_channels=int(info["in_channels"])
    )
    score_rt = runtime if s.score_precision == "attack" else replace(runtime, precision=s.score_precision)
    return LoadedEvaluation(
        model,
        info,
        checkpoint,
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


def _write(out: Path, results: dict, ev: LoadedEvaluation, indices: list, joined: Assembled) -> None:
    """Write examples.safetensors, then results.json (last: its presence marks a complete evaluation)."""
    outcomes = joined.outcomes
    write_examples(
        out / "examples.safetensors",
        indices,
        ev.x,
        ev.y,
        joined.clean_pred,
        joined.clean_prob,
        {k: (joined.example_images[k], outcomes[k].pred, outcomes[k].prob) for k in ev.specs},
    )
    write_json(out / "results.json", results)
