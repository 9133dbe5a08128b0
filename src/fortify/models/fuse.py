"""Fold batch norm into the convolution before it, for attacking and scoring a model in eval mode.

In eval mode a BatchNorm2d after a Conv2d is a fixed per-channel affine map, so it can be absorbed into
the convolution's weights and bias: the same function (up to float rounding, ~1e-6 on fortify's
ResNets) with one memory-bound layer fewer per block in both the forward and the backward pass. Attacks
only need gradients with respect to the input, so the folded copy serves every attack and every
prediction of an evaluation. Never train or craft training examples with it: training-mode batch norm
uses the batch's statistics, which the folded copy no longer has.
"""

from __future__ import annotations

import copy
import warnings

import torch


def fold_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """An eval-mode copy of `model` with every Conv2d -> BatchNorm2d pair folded (torch.fx).

    Falls back to an unmodified eval-mode copy (with a warning) when the model cannot be traced
    symbolically (data-dependent control flow in a user's model, for example)."""
    from torch.fx.experimental.optimization import fuse

    frozen = copy.deepcopy(model).eval()
    try:
        folded = fuse(frozen, inplace=True)
    except Exception as e:  # noqa: BLE001 - any tracing failure means "use the model as it is"
        warnings.warn(f"batch norm not folded ({type(e).__name__}); the model is used as it is", stacklevel=2)
        return frozen
    for p in folded.parameters():
        p.requires_grad_(False)
    return folded.eval()


def count_batchnorm(model: torch.nn.Module) -> int:
    return sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
