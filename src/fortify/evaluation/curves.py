"""Robust accuracy against eps: one curve per curve attack (a template whose eps each point sets).

`unit_curves` runs every curve on one unit and keeps, per eps, which images are still robust;
`curve_records` turns those flags, joined over the test set, into results.json's "curves".
"""

from __future__ import annotations

import time

import torch

from fortify.attacks import AttackSpec
from fortify.evaluation.attack_runs import AttackRunner
from fortify.evaluation.attack_set import spec_at_eps


def curve_eps(eps_curve: list[float]) -> list[float]:
    """The points a curve attacks: every eps of the curve but 0 (unchanged images: the clean accuracy)."""
    return [e for e in sorted(float(v) for v in eps_curve) if e != 0.0]


def unit_curves(
    runner: AttackRunner, curve_specs: dict[str, AttackSpec], eps_curve: list[float], cumulative: bool = True
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Per curve: a (points, images) bool tensor, robust at each nonzero eps; and the seconds it took.

    `cumulative`: an image fooled at one eps is fooled at every larger one (its example lies in every
    larger ball), so it keeps that example and only the images still robust are attacked at the next
    eps. A point is then the share robust at every eps up to it: non-increasing by construction, for a
    deterministic attack never above the independent figure, and cheaper where most images fall.
    Otherwise every eps is attacked independently over all the unit's images.
    """
    flags: dict[str, torch.Tensor] = {}
    seconds: dict[str, float] = {}
    for key, template in curve_specs.items():
        t0 = time.perf_counter()
        rows = []
        robust, x_adv = runner.clean_pred == runner.y, runner.x
        for e in curve_eps(eps_curve):
            spec, label = spec_at_eps(template, e), f"curve {key} eps={255 * e:g}/255"
            if cumulative:
                x_adv, pred = runner.attack(spec, label, todo=robust, start=x_adv)
                robust = robust & (pred == runner.y)
                rows.append(robust)
            else:
                rows.append(runner.attack(spec, label)[1] == runner.y)
        flags[key] = torch.stack(rows) if rows else torch.zeros(0, len(runner.y), dtype=torch.bool)
        seconds[key] = time.perf_counter() - t0
    return flags, seconds


def curve_records(
    curve_specs: dict[str, AttackSpec],
    eps_curve: list[float],
    cumulative: bool,
    flags: dict[str, torch.Tensor],
    clean_accuracy: float,
) -> dict[str, dict]:
    """results.json's "curves" from each curve's per-image flags over the whole test set."""
    curves: dict[str, dict] = {}
    for key, template in curve_specs.items():
        rows = iter(flags[key])
        points = [
            [0.0, clean_accuracy] if e == 0.0 else [e, float(next(rows).double().mean())]
            for e in sorted(float(v) for v in eps_curve)
        ]
        curves[key] = {
            "spec": str(template),  # curve_specs' templates carry no eps
            "attack": template.name,
            "norm": template.norm or "linf",
            "points": points,
            "cumulative": cumulative,
        }
    return curves
