"""TRADES' inner maximization (Zhang et al. 2019): L-inf PGD on KL(f(x) || f(x')), labels unused.

The attack TRADES training crafts its examples with. It maximizes the divergence from the model's own
clean prediction rather than a loss on the label, and starts from x + 0.001 * N(0, 1) (the reference
code's start). It is not an evaluation attack (no spec name): robustness is measured with pgd/strong.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fortify.attacks._common import attack_mode, check_threat, finish


def trades_kl(
    model: torch.nn.Module,
    x: torch.Tensor,
    *,
    eps: float,
    steps: int = 10,
    alpha: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """`steps` sign-gradient steps of size `alpha` (default 2.5 * eps / steps) on the KL between the
    clean and the perturbed softmax, projected into the L-inf eps-ball and [0, 1].

    Same contract as every fortify attack (eval mode, parameter gradients untouched, x's dtype and
    layout kept); the caller provides autocast (and, for training, a batch-statistics view of the model).
    """
    check_threat("linf", eps)
    if not x.is_floating_point():
        raise TypeError(f"attacks take float images in [0, 1], got dtype {x.dtype}")
    if alpha is None:
        alpha = 2.5 * eps / steps
    with attack_mode(model):
        x0 = x.detach()
        with torch.no_grad():
            p_clean = F.softmax(model(x0).float(), dim=1)
        noise = torch.randn(x0.shape, generator=generator, device="cpu").to(x0.device)
        x_adv = (x0 + 0.001 * noise).clamp(0, 1)
        for _ in range(steps):
            x_adv.requires_grad_(True)
            kl = F.kl_div(F.log_softmax(model(x_adv).float(), dim=1), p_clean, reduction="sum")
            (grad,) = torch.autograd.grad(kl, x_adv)
            x_adv = x_adv.detach() + alpha * grad.sign()
            x_adv = torch.min(torch.max(x_adv, x0 - eps), x0 + eps).clamp(0, 1)
    return finish(x_adv, x)
