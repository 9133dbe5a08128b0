"""A fixed offset per class added to the logits: the model's operating point.

A classifier trained on a rare class (IQ-OTH/NCCD's benign: about 15 scans) often still ranks that class
sensibly but never predicts it, because its logit sits just below the others. Adding a constant to that
class's logit moves the decision threshold without retraining. The offset is chosen on validation images
(fortify.evaluation.operating_point), recorded in the checkpoint's JSON and attached here as the model's
last layer, so every attack and every score sees the same function: the operating point is attacked end
to end, never applied after the attack.

The offset is a non-persistent buffer: the weights file is unchanged, and a fine-tune that starts from the
checkpoint trains the bare network.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class ClassBias(nn.Module):
    """logits + bias (one value per class)."""

    def __init__(self, bias: Sequence[float]) -> None:
        super().__init__()
        values = [float(b) for b in bias]
        if not values or not all(torch.isfinite(torch.tensor(values))):
            raise ValueError(f"class bias must be finite numbers, one per class, got {list(bias)!r}")
        self.register_buffer("bias", torch.tensor(values, dtype=torch.float32), persistent=False)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        # No shape check here: torch.fx traces this (batch-norm folding); the length is checked on load.
        return logits + self.bias.to(logits.dtype)

    def extra_repr(self) -> str:
        return f"bias={[round(b, 4) for b in self.bias.tolist()]}"


def with_class_bias(model: nn.Module, bias: Sequence[float] | None) -> nn.Module:
    """`model` followed by ClassBias(bias); the model itself when `bias` is None or all zero.

    A registry model (nn.Sequential) gains a last layer, so its state_dict keys stay as they were."""
    if bias is None or not any(float(b) for b in bias):
        return model
    if isinstance(model, nn.Sequential):
        model.add_module("class_bias", ClassBias(bias))
        return model
    return nn.Sequential(model, ClassBias(bias))
