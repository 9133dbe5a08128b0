"""A tiny CNN trained for a second on a synthetic 3-class task, shared by the attack tests.

Small enough that every attack runs in well under a second, trained enough that attacks have
something to break (clean accuracy ~100%) and that eps matters (not every sample falls at once).
"""

from __future__ import annotations

import torch
from torch import nn

SIZE = 12
NUM_CLASSES = 3


class TinyCNN(nn.Module):
    """BatchNorm and Dropout make train/eval mode observable: attacks must run it in eval mode."""

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(64, num_classes)
        self.modes_seen: list[bool] = []  # training flag at each forward, for the mode tests

    def forward(self, x):
        self.modes_seen.append(self.training)
        return self.head(self.dropout(self.features(x)))


def make_data(n: int, seed: int, num_classes: int = NUM_CLASSES) -> tuple[torch.Tensor, torch.Tensor]:
    """Class = which of a few fixed smooth templates is added to a noisy gray background."""
    g = torch.Generator().manual_seed(1234)  # templates fixed across splits
    templates = torch.nn.functional.avg_pool2d(torch.randn(num_classes, 1, SIZE, SIZE, generator=g), 3, 1, 1)
    templates = templates / templates.flatten(1).std(dim=1).view(-1, 1, 1, 1)
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, num_classes, (n,), generator=g)
    x = 0.5 + 0.12 * templates[y] + 0.12 * torch.randn(n, 1, SIZE, SIZE, generator=g)
    # Saturate some pixels to exactly 0 and 1, as in CT slices.
    return x.clamp(0.0, 1.0), y


def train_tiny(num_classes: int = NUM_CLASSES, seed: int = 0) -> TinyCNN:
    torch.manual_seed(seed)
    model = TinyCNN(num_classes)
    x, y = make_data(512, seed=seed + 1, num_classes=num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(150):
        idx = torch.randint(0, len(x), (64,), generator=torch.Generator().manual_seed(step))
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.modes_seen.clear()
    return model


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()
