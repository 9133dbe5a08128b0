"""One work unit of an evaluation: every per-image computation on its images, and their assembly.

`run_unit` computes a unit (clean predictions, each headline attack, each curve, the sanity runs) with
randomness drawn from the unit's own seeds, so its outcome does not depend on which process runs it or
when; `assemble` joins the units of a whole test set, in order, into the per-image tensors the
results are computed from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from fortify.attacks import AttackSpec
from fortify.evaluation.adversarial_images import unit_adversarial
from fortify.evaluation.attack_runs import AttackOutcome, AttackRunner, accuracy, attack_entry, unit_attack
from fortify.evaluation.batches import count_passes, predict
from fortify.evaluation.curves import curve_records, unit_curves
from fortify.evaluation.sanity_runs import SanityInputs, SanityPlan, sanity_verdicts, unit_sanity_runs
from fortify.evaluation.settings import EvalSettings
from fortify.evaluation.units import UnitResult, unit_seed
from fortify.runtime import Runtime

PASSES = ("gradient_evaluations", "forward_passes")


@dataclass
class UnitPlan:
    """What every unit of one evaluation shares."""

    model: torch.nn.Module
    x: torch.Tensor  # the whole test set (a unit reads its slice)
    y: torch.Tensor
    specs: dict[str, AttackSpec]  # the headline attacks, keyed
    curve_specs: dict[str, AttackSpec]  # curve templates, keyed
    sanity: SanityPlan
    settings: EvalSettings
    runtime: Runtime
    score_rt: Runtime
    examples: list[int]  # test-set indices whose adversarial images are kept (the report's figures)


def run_unit(plan: UnitPlan, index: int, sl: slice, start: Callable) -> UnitResult:
    """Unit `index` (test images `sl`): per-image tensors, and its counts and seconds."""
    s = plan.settings
    x, y = plan.x[sl], plan.y[sl]
    clean_pred, clean_prob = predict(plan.model, x, plan.score_rt, s.batch_size)
    runner = AttackRunner(
        plan.model,
        x,
        y,
        clean_pred,
        plan.runtime,
        plan.score_rt,
        s.batch_size,
        lambda what: unit_seed(s.seed, what, index),
        start,
    )
    examples = [i for i in plan.examples if sl.start <= i < sl.stop]
    rows = torch.tensor([i - sl.start for i in examples], dtype=torch.long)
    t = {"clean.pred": clean_pred, "clean.prob": clean_prob, "examples.index": torch.tensor(examples).long()}
    meta: dict = {"attacks": {}}
    every_row = torch.arange(sl.stop - sl.start)  # x_adv of every image, for the worst-case images
    x_adv: dict[str, torch.Tensor] = {}
    for key, spec in plan.specs.items():
        tensors, meta["attacks"][key] = unit_attack(runner, key, spec, every_row)
        x_adv[key] = tensors["examples"]
        tensors["examples"] = x_adv[key][rows]
        t.update({f"attack.{key}.{name}": v for name, v in tensors.items()})
    t.update(unit_adversarial(y, clean_pred, x_adv, {k: t[f"attack.{k}.pred"] for k in x_adv}))
    del x_adv
    with count_passes(plan.model) as curve_count:
        flags, meta["curve_seconds"] = unit_curves(runner, plan.curve_specs, s.eps_curve, s.curve_cumulative)
    t.update({f"curve.{key}": v for key, v in flags.items()})
    with count_passes(plan.model) as sanity_count:
        runs, meta["sanity_seconds"] = unit_sanity_runs(runner, plan.sanity)
    t.update({f"sanity.{key}": v for key, v in runs.items()})
    meta["passes"] = {"curves": curve_count.as_dict(), "sanity": sanity_count.as_dict()}
    return UnitResult(index, sl.start, sl.stop, t, meta)


@dataclass
class Assembled:
    """Every unit joined over the test set, and what results.json is built from."""

    clean_pred: torch.Tensor
    clean_prob: torch.Tensor
    outcomes: dict[str, AttackOutcome]
    curves: dict[str, dict]
    curve_seconds: dict[str, float]
    checks: list[dict]
    sanity_runs: dict[str, dict]
    passes: dict[str, dict[str, int]]  # curves, sanity
    example_images: dict[str, torch.Tensor]  # attack key -> x_adv over the test set (examples filled in)


def _joined(units: list[UnitResult], name: str) -> torch.Tensor:
    return torch.cat([u.tensors[name] for u in units])


def _fill_fooled_by(units: list[UnitResult], prefix: str) -> None:
    """A unit where `strong` attacked no image (the clean model got none right) records no component:
    none fooled its images (-1), as for any image the attack never saw."""
    name = prefix + "fooled_by"
    if any(name in u.tensors for u in units):
        for u in units:
            u.tensors.setdefault(name, torch.full((u.stop - u.start,), -1, dtype=torch.long))


def assemble(plan: UnitPlan, units: list[UnitResult], classes: list[str], transfer) -> Assembled:
    """The units of the whole test set, in order, joined and scored."""
    y = plan.y
    clean_pred, clean_prob = _joined(units, "clean.pred"), _joined(units, "clean.prob")
    example_index = _joined(units, "examples.index")
    outcomes: dict[str, AttackOutcome] = {}
    example_images: dict[str, torch.Tensor] = {}
    for key, spec in plan.specs.items():
        prefix = f"attack.{key}."
        names = {n[len(prefix) :] for u in units for n in u.tensors if n.startswith(prefix)}
        _fill_fooled_by(units, prefix)
        t = {n: _joined(units, prefix + n) for n in names}
        metas = [u.meta["attacks"][key] for u in units]
        entry = attack_entry(spec, y, clean_pred, t, metas, classes)
        components = next((m["components"] for m in metas if m["components"]), [])
        outcomes[key] = AttackOutcome(entry, t["pred"], t["prob"], t.get("fooled_by"), components)
        example_images[key] = plan.x.clone()
        example_images[key][example_index] = t["examples"]
    clean_acc = accuracy(y, clean_pred)
    s = plan.settings
    flags = {key: torch.cat([u.tensors[f"curve.{key}"] for u in units], dim=1) for key in plan.curve_specs}
    curves = curve_records(plan.curve_specs, s.eps_curve, s.curve_cumulative, flags, clean_acc)
    run_names = [n.split(".", 1)[1] for n in units[0].tensors if n.startswith("sanity.")]
    runs = {name: _joined(units, f"sanity.{name}") for name in run_names}
    seconds = {name: sum(u.meta["sanity_seconds"][name] for u in units) for name in run_names}
    checks, sanity_runs = sanity_verdicts(
        SanityInputs(y, clean_acc, plan.specs, outcomes, curves, plan.sanity, runs, seconds, transfer or [])
    )
    passes = {
        stage: {k: sum(int(u.meta["passes"][stage][k]) for u in units) for k in PASSES}
        for stage in ("curves", "sanity")
    }
    curve_seconds = {key: sum(u.meta["curve_seconds"][key] for u in units) for key in plan.curve_specs}
    return Assembled(
        clean_pred, clean_prob, outcomes, curves, curve_seconds, checks, sanity_runs, passes, example_images
    )
