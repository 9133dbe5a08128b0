"""The run's time budget on screen: the machine measured once, every stage predicted, corrected as
stages finish (fortify.pipeline.estimate holds the model of cost)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from fortify.fileio import write_json
from fortify.pipeline.estimate import (
    Budget,
    MachineSpeed,
    StageEstimate,
    fmt_minutes,
    measure_machine,
)
from fortify.pipeline.stage import RunPlan, Stage

if TYPE_CHECKING:
    pass


def measure(run: RunPlan, console) -> MachineSpeed:
    """Time the profile's model on this machine without touching the run's random streams."""
    from fortify.models import build_model

    with torch.random.fork_rng(devices=[]):
        model = build_model(run.prof.model, 3, in_channels=1)
        speed = measure_machine(
            model,
            run.prof.image_size,
            1,
            run.runtime,
            train_batch=int({**run.prof.train, **run.prof.normal}.get("batch_size", 32)),
            eval_batch=run.prof.evaluate.batch_size,
        )
    console.print(
        f"this machine ({speed.device}, {speed.precision}), per image: training step "
        f"{1000 * speed.train_step:.1f} ms, attack step {1000 * speed.gradient:.1f} ms, forward "
        f"{1000 * speed.forward:.1f} ms (measured in {speed.seconds:.1f} s)"
    )
    return speed


def print_budget(console, budget: Budget, stages: list[Stage], first: bool) -> None:
    if first:
        for stage, est in zip(stages, budget.stages, strict=True):
            if est.measured is None and est.seconds >= 1:
                console.print(f"  estimate {stage.title} ({stage.name}): {fmt_minutes(est.seconds)}")
        extra = [s.name for s in stages if s.kind == "extra"]
        console.print(
            f"estimated time for the whole run: {fmt_minutes(budget.total())} "
            "(updated as stages finish; a first estimate can be off by 2x)"
            + (f", not counting {', '.join(extra)}" if extra else "")
        )
    else:
        console.print(
            f"  remaining about {fmt_minutes(budget.remaining())}; whole run about "
            f"{fmt_minutes(budget.total())} (first estimate {fmt_minutes(budget.first_total)})"
        )


def first_epoch_estimate(console, budget: Budget, name: str, epoch: int, seconds: float, epochs: int) -> None:
    """After the first training epoch of the run, the whole-run estimate with training rescaled by it."""
    if epoch == 1 and budget.epoch_measured(name, seconds, epochs):
        console.print(
            f"  first epoch took {seconds:.0f} s: training about {fmt_minutes(seconds * epochs)} for this "
            f"model; whole run about {fmt_minutes(budget.total())} (first estimate "
            f"{fmt_minutes(budget.first_total)})"
        )


def first_budget(run: RunPlan, stages: list[Stage], skipped: list[str], console) -> Budget:
    """Measure this machine, predict every stage (those already skipped cost nothing), print, save."""
    speed = measure(run, console)
    budget = Budget(speed, [StageEstimate(s.name, s.kind, s.cost(speed)) for s in stages])
    for name in skipped:
        budget.skipped(name)
    print_budget(console, budget, stages, first=True)
    write_json(run.out / "estimate.json", budget.to_dict())
    return budget
