"""`strong`: fortify's AutoAttack-style ensemble that also works on 3-class models.

Per sample the worst case over APGD-CE, APGD-DLR, targeted APGD-DLR (every wrong class up to
num_classes-1 targets) and PGD with restarts (CW margin loss, a different landscape from CE).
Each attack only sees the samples that all previous ones failed to fool, so on a weak model most
of the cost is the first, cheapest attack.
"""

from __future__ import annotations

import torch

from fortify.attacks._common import attack_mode, check_input, check_threat, finish, logits_f32
from fortify.attacks.apgd import apgd
from fortify.attacks.pgd import pgd


def strong(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    steps: int = 50,
    restarts: int = 1,
    pgd_restarts: int = 2,
    n_target_classes: int = 9,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Untargeted per-sample worst case of APGD-CE, APGD-DLR, APGD-T-DLR and PGD-CW.

    `steps` is used by every component (PGD gets alpha = 2.5*eps/steps), `restarts` by the APGD
    ones, `pgd_restarts` by PGD. `n_target_classes` is capped at num_classes-1. DLR components
    are skipped for 2-class models, where DLR is undefined. Returns, per sample, the first
    adversarial example found, or the input if none was (a robust sample).
    """
    check_threat(norm, eps)
    check_input(x, y)
    with attack_mode(model):
        x0 = x.detach()
        with torch.no_grad():
            clean = logits_f32(model, x0)
        num_classes = clean.shape[1]
        robust = clean.argmax(1) == y
        out = x0.clone()
        common = dict(eps=eps, norm=norm, steps=steps, generator=generator)
        components = [lambda m, xs, ys: apgd(m, xs, ys, loss="ce", restarts=restarts, **common)]
        if num_classes >= 3:
            components += [
                lambda m, xs, ys: apgd(m, xs, ys, loss="dlr", restarts=restarts, **common),
                lambda m, xs, ys: apgd(m, xs, ys, loss="dlr", restarts=restarts,
                                       n_target_classes=min(n_target_classes, num_classes - 1), **common),
            ]
        components.append(lambda m, xs, ys: pgd(m, xs, ys, loss="cw", restarts=pgd_restarts,
                                                early_stop=True, **common))
        for attack in components:
            idx = robust.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            adv = attack(model, x0[idx], y[idx])
            with torch.no_grad():
                hit = logits_f32(model, adv).argmax(1) != y[idx]
            out[idx[hit]] = adv[hit]
            robust[idx[hit]] = False
    return finish(out, x)
