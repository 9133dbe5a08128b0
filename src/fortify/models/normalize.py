"""Normalization as the model's first layer.

Models take pixels in [0,1]; the attacks and their epsilons live in that pixel space. Putting
`(x - mean) / std` inside the model means no caller normalizes twice or forgets to.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

# ImageNet RGB statistics (torchvision's pretrained weights expect these).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Grayscale model trained from scratch: CT slices in [0,1] sit around mid-gray with a wide spread.
GRAY_MEAN = (0.5,)
GRAY_STD = (0.25,)


class Normalize(nn.Module):
    """`(x - mean) / std` per channel; mean/std are buffers so they travel with the checkpoint."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError("mean and std must have the same length")
        if any(s <= 0 for s in std):
            raise ValueError("std must be positive")
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"
