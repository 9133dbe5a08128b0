"""Hand-built models whose decision boundaries a test can reason about exactly."""

from __future__ import annotations

import torch
from torch import nn


class BenignUpNormalDown(nn.Module):
    """Three classes (benign, malignant, normal) from a slice's mean intensity m: malignant at m = 0.5,
    benign a little above (m > 0.525), normal further below (m < 0.45). An untargeted attack on a
    malignant slice follows the gradient up, to benign (the nearer, steeper class); normal is reachable
    only by aiming at it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = x.flatten(1).mean(1) - 0.5
        return torch.stack([40 * d - 1, torch.zeros_like(d), -20 * d - 1], dim=1)
