"""`strong`: fortify's AutoAttack-standard ensemble, which also works on 2- and 3-class models.

Per sample the worst case over APGD-CE, APGD-DLR, targeted APGD-DLR (every wrong class, up to
num_classes-1 targets), PGD with restarts (CW margin loss, a different landscape from CE) and,
last, the gradient-free Square Attack. Each attack only sees the samples that all previous ones
failed to fool, so on a weak model most of the cost is the first, cheapest attack, and Square's
large query budget is only spent on the samples every gradient attack left standing. Those are
exactly where Square matters: a sample only Square fools points at gradient masking.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from fortify.attacks._common import attack_mode, check_input, check_threat, finish, fooled, logits_f32
from fortify.attacks.apgd import apgd
from fortify.attacks.pgd import pgd
from fortify.attacks.square import square

# Fixed, whether or not a component runs (DLR ones are skipped for 2 classes, Square with
# square_queries=0), so an index in `fooled_by` always means the same attack.
COMPONENT_NAMES = ("apgd-ce", "apgd-dlr", "apgd-t-dlr", "pgd-cw", "square")
# "standard" is AutoAttack's standard set as it applies to a few classes (APGD-CE, targeted APGD-DLR,
# Square; FAB-T left out, as it rarely adds anything, Croce & Hein 2020); "full" adds untargeted
# APGD-DLR and PGD on the CW margin, two more gradient attacks on every sample the others left robust:
# twice the gradient evaluations on a robust sample, for the samples only they find.
VERSIONS = {
    "full": COMPONENT_NAMES,
    "standard": ("apgd-ce", "apgd-t-dlr", "square"),
}
ROBUST = -1  # fooled_by: no component fooled the sample
CLEAN_MISCLASSIFIED = -2  # fooled_by: misclassified on the clean input, never attacked


class StrongResult(NamedTuple):
    x_adv: torch.Tensor  # per sample the first adversarial example found, else the input
    success: torch.Tensor  # bool (N,): x_adv misclassified (judged on x_adv itself, one forward pass)
    fooled_by: torch.Tensor  # int64 (N,): index into component_names, or ROBUST / CLEAN_MISCLASSIFIED
    component_names: tuple[str, ...] = COMPONENT_NAMES


def strong(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    steps: int = 100,
    restarts: int = 1,
    pgd_restarts: int = 2,
    n_target_classes: int = 9,
    square_queries: int = 5000,
    version: str = "full",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Untargeted per-sample worst case of the ensemble; see `strong_detailed`."""
    return strong_detailed(
        model,
        x,
        y,
        eps=eps,
        norm=norm,
        steps=steps,
        restarts=restarts,
        pgd_restarts=pgd_restarts,
        n_target_classes=n_target_classes,
        square_queries=square_queries,
        version=version,
        generator=generator,
    ).x_adv


def strong_detailed(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    steps: int = 100,
    restarts: int = 1,
    pgd_restarts: int = 2,
    n_target_classes: int = 9,
    square_queries: int = 5000,
    version: str = "full",
    generator: torch.Generator | None = None,
) -> StrongResult:
    """APGD-CE, APGD-DLR, APGD-T-DLR, PGD-CW, then Square, in the L-inf or L2 eps-ball.

    `steps` is used by every gradient component (AutoAttack's 100 by default; PGD gets
    alpha = 2.5*eps/steps), `restarts` by the APGD ones, `pgd_restarts` by PGD, `square_queries`
    by Square (queries per sample; 0 disables it). `n_target_classes` is capped at
    num_classes-1, so with up to 10 classes APGD-T targets every wrong class. DLR components are
    skipped for 2-class models, where DLR is undefined. `version` picks the components: "full" (all
    five) or "standard" (APGD-CE, targeted APGD-DLR, Square: AutoAttack's standard set).

    `fooled_by[i]` is the index in `component_names` of the first component that fooled sample
    i, -1 (ROBUST) if none did, -2 (CLEAN_MISCLASSIFIED) if it was misclassified to begin with.
    `success` is judged by one forward pass on the returned batch, so it always agrees with a
    re-score of x_adv in the same precision; a component success that this pass does not
    confirm (possible only through batch-size-dependent rounding) counts as robust and that
    sample gets its input back.
    """
    check_threat(norm, eps)
    check_input(x, y)
    if version not in VERSIONS:
        raise ValueError(f"unknown strong version {version!r}; valid: {', '.join(VERSIONS)}")
    if square_queries < 0:
        raise ValueError(f"square_queries must be >= 0 (0 disables Square), got {square_queries}")
    with attack_mode(model):
        x0 = x.detach()
        with torch.no_grad():
            clean = logits_f32(model, x0)
        num_classes = clean.shape[1]
        robust = clean.argmax(1) == y
        fooled_by = torch.full((x.shape[0],), ROBUST, dtype=torch.int64, device=x.device)
        fooled_by[~robust] = CLEAN_MISCLASSIFIED
        out = x0.clone()
        components = _components(
            model,
            num_classes,
            eps=eps,
            norm=norm,
            steps=steps,
            restarts=restarts,
            pgd_restarts=pgd_restarts,
            n_target_classes=n_target_classes,
            square_queries=square_queries,
            generator=generator,
        )
        for i, name in enumerate(COMPONENT_NAMES):
            idx = robust.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            if name not in components or name not in VERSIONS[version]:
                continue
            adv = components[name](x0[idx], y[idx])
            with torch.no_grad():
                hit = fooled(logits_f32(model, adv), y[idx], False)
            out[idx[hit]] = adv[hit]
            robust[idx[hit]] = False
            fooled_by[idx[hit]] = i
        x_adv, success = _confirmed(model, x, y, out, fooled_by)
    return StrongResult(x_adv, success, fooled_by)


def _components(
    model,
    num_classes,
    *,
    eps,
    norm,
    steps,
    restarts,
    pgd_restarts,
    n_target_classes,
    square_queries,
    generator,
) -> dict:
    """name -> attack(xs, ys) for the components this model and budget allow (not yet filtered by version)."""
    common = dict(eps=eps, norm=norm, generator=generator)
    grad_common = dict(steps=steps, **common)
    components = {
        "apgd-ce": lambda xs, ys: apgd(model, xs, ys, loss="ce", restarts=restarts, **grad_common),
        "pgd-cw": lambda xs, ys: pgd(
            model, xs, ys, loss="cw", restarts=pgd_restarts, early_stop=True, **grad_common
        ),
    }
    if num_classes >= 3:
        k = min(n_target_classes, num_classes - 1)
        components["apgd-dlr"] = lambda xs, ys: apgd(
            model, xs, ys, loss="dlr", restarts=restarts, **grad_common
        )
        components["apgd-t-dlr"] = lambda xs, ys: apgd(
            model, xs, ys, loss="dlr", restarts=restarts, n_target_classes=k, **grad_common
        )
    if square_queries > 0:
        components["square"] = lambda xs, ys: square(model, xs, ys, queries=square_queries, **common)
    return components


def _confirmed(model, x, y, out, fooled_by) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_adv, success) judged by one forward pass on the returned batch; a component success this pass
    does not confirm gets its input back and is marked ROBUST in `fooled_by` (in place)."""
    x0 = x.detach()
    x_adv = finish(out, x)
    with torch.no_grad():
        success = fooled(logits_f32(model, x_adv), y, False)
        lost = (fooled_by >= 0) & ~success
        if lost.any():
            x_adv[lost] = x0[lost].to(x_adv.dtype)
            fooled_by[lost] = ROBUST
            success = fooled(logits_f32(model, x_adv), y, False)
    return x_adv, success
