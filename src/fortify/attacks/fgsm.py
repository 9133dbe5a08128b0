"""FGSM (Goodfellow et al. 2015) and FGSM-RS, the random-start variant of fast adversarial training."""

from __future__ import annotations

import torch

from fortify.attacks._common import (
    ascent_direction,
    attack_mode,
    check_input,
    check_threat,
    finish,
    input_grad,
    project,
    uniform_start,
)


def fgsm(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    random_start: bool = False,
    alpha: float | None = None,
    targeted: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One gradient-sign step of size `alpha` from x (or from a uniform random point in the ball).

    alpha defaults to eps, or 1.25*eps with `random_start` (Wong et al. 2020, "Fast is better than
    free"), where the step is taken from the random point and projected back into the eps-ball.
    For L2 the step is along the L2-normalized gradient. With `targeted`, y holds target classes.
    """
    check_threat(norm, eps)
    check_input(x, y)
    if alpha is None:
        alpha = 1.25 * eps if random_start else eps
    with attack_mode(model):
        x0 = x.detach()
        start = uniform_start(x0, norm, eps, generator) if random_start else x0
        _, _, grad = input_grad(model, start, y, "ce", targeted)
        x_adv = project(start + alpha * ascent_direction(grad, norm), x0, norm, eps)
    return finish(x_adv, x)
