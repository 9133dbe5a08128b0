"""`reproduce`: the whole study in one resumable run directory.

audit → split → normal → normal/eval → adversarial → adversarial/eval → transfer → compare → report.
With `folds=K` the split becomes K scan-grouped folds, the study runs once per fold in RUN_DIR/fold-<i>/,
and a last stage writes RUN_DIR/cv/summary.json and the cross-validation report.
Each stage writes its outputs (atomically), then a record holding its fingerprint. On `--resume`, a stage
whose record matches and whose outputs exist is skipped; an interrupted training stage continues from its
`last.*` checkpoint. Everything the user can get wrong is checked before the first file is written.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fortify.attacks import AttackSpec
from fortify.distributed import DistInfo, barrier, init_distributed, shutdown
from fortify.errors import ConfigError
from fortify.fileio import write_json, write_yaml
from fortify.pipeline.cv_stage import cv_stage
from fortify.pipeline.data_stages import data_stages, expected_sizes
from fortify.pipeline.estimate import (
    Budget,
)
from fortify.pipeline.fingerprint import fingerprint, is_up_to_date, write_record
from fortify.pipeline.profiles import check_defense, load_profile
from fortify.pipeline.run_budget import first_budget, first_epoch_estimate, print_budget
from fortify.pipeline.run_config import check_data, prepare_out, run_config
from fortify.pipeline.stage import RunPlan, Stage
from fortify.pipeline.study_stages import attack_specs, study_stages
from fortify.runtime import Runtime

if TYPE_CHECKING:
    pass


def _print_stage(console, index: int, total: int, stage: Stage, status: str) -> None:
    console.print(f"[bold][{index}/{total}][/bold] {stage.title}: {status}")


def reproduce(
    data: str | Path,
    out: str | Path,
    *,
    profile: str = "quick",
    defense: str | None = None,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    overrides: dict[str, Any] | None = None,
    device: str = "auto",
    precision: str = "auto",
    folds: int | None = None,
    fold: int | None = None,
    on_stage: Callable[[str, str], None] | None = None,
) -> Path:
    """Run (or resume) the whole study into `out`; return the run directory.

    `defense` is the adversarial model's recipe (None: the profile's; quick's is the study's `mixed`).
    `folds=K` runs scan-grouped K-fold cross-validation instead of one train/val/test split; `fold=i`
    runs fold i alone (K machines can share the folds of one run directory, each with `resume=True`),
    and the summary then covers the folds finished so far and names the missing ones.
    `on_stage(name, status)` is called with status "running", "done" or "skipped (up to date)" per stage
    (the CLI shows the same through the progress display)."""
    run, stages, cfg = _plan(data, out, profile, defense, progress, overrides, device, precision, folds, fold)
    # Under torchrun every process runs this function: rank 0 owns the run directory and runs the stages
    # that are not distributed; training (DDP) and evaluation (work units) run on every process.
    dist = init_distributed(run.runtime.device.type)
    if dist.is_main:
        prepare_out(run.out, cfg, resume=resume, force=force)
        run.out.mkdir(parents=True, exist_ok=True)
        write_yaml(run.out / "config.yaml", cfg)
    barrier(dist)
    _run_stages(run, stages, on_stage, dist)
    shutdown(dist)
    return run.out


def _plan(
    data: str | Path,
    out: str | Path,
    profile: str,
    defense: str | None,
    progress: bool,
    overrides: dict[str, Any] | None,
    device: str,
    precision: str,
    folds: int | None,
    fold: int | None = None,
) -> tuple[RunPlan, list[Stage], dict[str, Any]]:
    """Validate everything before anything is written: the run's settings, its stages and config.yaml."""
    if folds is not None and (isinstance(folds, bool) or not isinstance(folds, int) or folds < 2):
        raise ConfigError(f"--folds must be a whole number >= 2, got {folds!r}")
    if fold is not None and (folds is None or not 0 <= fold < folds):
        raise ConfigError(f"--fold needs --folds K and a fold index 0..K-1, got --fold {fold!r}")
    prof = load_profile(profile, overrides)
    defense = prof.defense if defense is None else check_defense(defense)
    if folds is not None and prof.grouping == "given":
        raise ConfigError("--folds re-splits the data, so it cannot keep the given train/val/test folders")
    data = check_data(data)
    runtime = Runtime.resolve(device, precision)
    out = Path(out).expanduser().resolve()
    cfg = run_config(prof, data, defense, device, precision, runtime, overrides)
    cfg["folds"] = folds
    specs = attack_specs(prof)
    ev = prof.evaluate
    pgd_spec = next((s for s in specs if s.name == "pgd"), None)
    transfer_attack = (
        ev.transfer_attack or pgd_spec or AttackSpec.build("pgd", eps=ev.eps, steps=ev.pgd_steps)
    )
    from fortify.pipeline.extras import parse_extras, resolve_settings

    extras = {name: resolve_settings(name, getattr(prof, name)) for name in parse_extras(prof.extras)}
    run = RunPlan(
        prof,
        data,
        defense,
        device,
        precision,
        runtime,
        out,
        progress,
        specs,
        transfer_attack,
        {},
        expected_sizes(data, prof, folds),
        extras,
    )
    indices = [None] if folds is None else ([fold] if fold is not None else list(range(folds)))
    stages = data_stages(run, folds)
    for i in indices:  # building the stages validates every training config
        root = out if i is None else out / f"fold-{i}"
        stages += study_stages(run, root, "" if i is None else f"fold-{i}/")
    if folds is not None:
        stages.append(cv_stage(run, folds))
    # the resolved attack specs, so config.yaml alone says exactly what was run
    cfg["resolved"] = {"attacks": [str(s) for s in specs], "transfer_attack": str(transfer_attack)}
    return run, stages, cfg


# Where a training stage's files are, not what it computes: the split's and the init checkpoint's
# contents are its inputs (hashed), so a run directory that moved, or a dataset copied again, still resumes.


# Stages every torchrun process takes part in (DDP training, evaluation units); rank 0 runs the others.
DISTRIBUTED_KINDS = ("train", "eval")


def _run_stages(
    run: RunPlan, stages: list[Stage], on_stage: Callable[[str, str], None] | None, dist: DistInfo
) -> None:
    """Each stage in order: skipped when up to date, else run and recorded; the time budget is measured at
    the first stage with work to do (a finished run resumed costs no calibration) and updated after each.
    Under torchrun the processes meet before each stage (they decide on the same files), and only rank 0
    prints, measures and writes records."""
    from rich.console import Console

    console = Console(stderr=True, quiet=not (run.progress and dist.is_main), soft_wrap=True)
    notify = on_stage or _ignore
    budget: Budget | None = None
    skipped: list[str] = []
    for i, stage in enumerate(stages, 1):
        barrier(dist)
        inputs = stage.inputs()
        fp = fingerprint(stage.name, stage.config, inputs)
        if is_up_to_date(
            stage.record,
            stage.name,
            stage.config,
            inputs,
            stage.outputs,
            defaults=stage.defaults,
            retired_inputs=stage.retired_inputs,
            retired_config=stage.retired_config,
        ):
            _print_stage(console, i, len(stages), stage, "skipped (up to date)")
            skipped.append(stage.name)
            if budget is not None:
                budget.skipped(stage.name)
            notify(stage.name, "skipped (up to date)")
            continue
        if not dist.is_main:
            _follow(stage, dist)
            continue
        if budget is None:
            budget = first_budget(run, stages, skipped, console)
        if stage.record.is_file():  # finished earlier for other inputs: its outputs are stale
            stage.clean()
        barrier(dist)  # the others start a distributed stage once the stale outputs are gone
        _print_stage(console, i, len(stages), stage, "running")
        notify(stage.name, "running")
        started, cpu_started = time.perf_counter(), time.process_time()
        run.on_epoch = partial(first_epoch_estimate, console, budget, stage.name)
        stage.run()
        run.on_epoch = None
        barrier(dist)  # every process has finished its share before the record says "done"
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        write_record(stage.record, stage.name, fp, stage.config, inputs, seconds, cpu)
        _print_stage(console, i, len(stages), stage, f"done in {seconds:.1f} s (CPU {cpu:.1f} s)")
        budget.finished(stage.name, seconds)
        if i < len(stages):
            print_budget(console, budget, stages, first=False)
        write_json(run.out / "estimate.json", budget.to_dict())
        notify(stage.name, "done")


def _follow(stage: Stage, dist: DistInfo) -> None:
    """A process other than rank 0 in a stage rank 0 found stale: its share of a distributed stage."""
    barrier(dist)  # rank 0 has removed stale outputs
    if stage.kind in DISTRIBUTED_KINDS or stage.distributed:
        stage.run()
    barrier(dist)


def _ignore(name: str, status: str) -> None:
    return None
