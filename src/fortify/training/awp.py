"""Adversarial weight perturbation (AWP; Wu, Xia & Wang, NeurIPS 2020).

Robust overfitting goes with a sharp adversarial loss landscape in weight space, so AWP takes each
step's loss not at the weights w but at w + v, where v moves every weight matrix (conv and linear
kernels, the reference code's `len(size) > 1` rule) by gamma times its own norm towards higher
adversarial loss: v_l = gamma * ||w_l|| * g_l / ||g_l||, g_l the gradient of the same adversarial loss.
The reference code gets the direction from one SGD step of a proxy copy; one gradient is the same
direction without the copy. The optimizer step is then applied to the restored w, with the gradient
taken at w + v. Cost: one more forward and backward per step (not one more attack).

The probe forward uses batch statistics with running statistics frozen (`BatchStatsModel`), so it
changes nothing but the weights it perturbs, and those are copied back exactly, not subtracted.
Under DDP each rank perturbs with its own shard's gradient.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def perturbed_weights(model: nn.Module) -> list[nn.Parameter]:
    """The parameters AWP perturbs: trainable weight matrices and kernels (not biases or norms)."""
    return [p for p in model.parameters() if p.requires_grad and p.dim() > 1]


def perturb_weights(
    model: nn.Module, loss_fn: Callable[[], torch.Tensor], gamma: float
) -> Callable[[], None]:
    """Move `model`'s weights to w + v (see the module docstring) and return the function that puts the
    original weights back, bit for bit. `loss_fn()` computes the adversarial loss through `model`."""
    params = perturbed_weights(model)
    grads = torch.autograd.grad(loss_fn(), params, allow_unused=True)
    saved = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, g in zip(params, grads, strict=True):
            if g is None:
                continue
            g_norm = g.float().norm()
            if g_norm > 0:
                p.add_(g.to(p.dtype), alpha=float(gamma * p.norm() / g_norm))

    def restore() -> None:
        with torch.no_grad():
            for p, s in zip(params, saved, strict=True):
                p.copy_(s)

    return restore
