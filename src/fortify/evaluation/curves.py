"""Robust accuracy against eps: one curve per curve attack (a template whose eps each point sets)."""

from __future__ import annotations

import time

from fortify.evaluation.attack_runs import AttackRunner, accuracy
from fortify.evaluation.attack_set import (
    spec_at_eps,
)
from fortify.runtime import seed_everything


def robust_accuracy_curves(ctx: AttackRunner, curve_specs, eps_curve, cumulative: bool = True):
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
                points.append([0.0, accuracy(ctx.y, ctx.clean_pred)])
                continue
            spec, label = spec_at_eps(template, e), f"curve {key} eps={255 * e:g}/255"
            seed_everything(ctx.seed)
            if cumulative:
                x_adv, pred = ctx.attack(spec, label, todo=robust, start=x_adv)
                robust = robust & (pred == ctx.y)
                points.append([e, float(robust.double().mean())])
            else:
                points.append([e, accuracy(ctx.y, ctx.attack(spec, label)[1])])
        curves[key] = {
            "spec": str(template.without_eps()),
            "attack": template.name,
            "norm": template.norm or "linf",
            "points": points,
            "cumulative": cumulative,
        }
        seconds[key] = time.perf_counter() - t0
    return curves, seconds
