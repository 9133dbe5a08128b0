"""End to end: a model that masks its gradients fools PGD but not Square, and the check notices.

The masked model is the trained tiny CNN behind an input quantisation x -> round(8x)/8. Its
forward pass is almost the same function (clean accuracy stays 100%), but torch.round has a zero
gradient, so every gradient attack takes zero steps and only its random start can do anything.
Square only queries logits: it never sees the gradient, and breaks the model as if the
quantisation were not there. `sanity.gradient_free_not_stronger` must FAIL on the masked model
and PASS on the plain one.
"""

from __future__ import annotations

import pytest
import torch
from attack_helpers import accuracy
from torch import nn

from fortify.attacks import apgd, pgd, square, strong_detailed
from fortify.evaluation import sanity

EPS = 12 / 255
N = 100


class Quantise(nn.Module):
    """Round to 8 gray levels; torch.round's gradient is zero everywhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 8) / 8


def _fooled(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1) != y


@pytest.fixture(scope="module")
def masked_model(tiny_model) -> nn.Module:
    return nn.Sequential(Quantise(), tiny_model).eval()


def _measure(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    gen = torch.Generator().manual_seed(0)
    correct = ~_fooled(model, x, y)
    by_pgd = _fooled(model, pgd(model, x, y, eps=EPS, steps=20, early_stop=True, generator=gen), y)
    by_apgd = _fooled(model, apgd(model, x, y, eps=EPS, steps=20, generator=gen), y)
    x_sq = square(model, x, y, eps=EPS, queries=300, generator=gen)
    by_square = _fooled(model, x_sq, y)
    only_square = by_square & ~by_pgd & ~by_apgd & correct
    return {
        "clean": correct.float().mean().item(),
        "pgd": 1 - (by_pgd | ~correct).float().mean().item(),
        "square": accuracy(model, x_sq, y),
        "check": sanity.gradient_free_not_stronger(int(correct.sum()), int(only_square.sum()), ["pgd"]),
    }


def test_quantised_model_stalls_pgd_breaks_under_square_and_fails_the_check(masked_model, test_batch):
    x, y = test_batch[0][:N], test_batch[1][:N]
    got = _measure(masked_model, x, y)
    # Measured: clean 100%, PGD/APGD 100% (zero gradients), Square 41%, 59 images only Square fooled.
    assert got["clean"] >= 0.95
    assert got["pgd"] >= got["clean"] - 0.05
    assert got["square"] <= got["pgd"] - 0.3
    assert got["check"]["passed"] is False


def test_same_cnn_without_quantisation_passes_the_check(tiny_model, test_batch):
    x, y = test_batch[0][:N], test_batch[1][:N]
    got = _measure(tiny_model, x, y)
    # Measured: PGD 36%, Square 43%, no image fooled only by Square.
    assert got["pgd"] < got["clean"] - 0.3  # the gradient attacks work here
    assert got["check"]["passed"] is True, got["check"]["detail"]


@pytest.mark.parametrize("masked", [True, False])
def test_strong_fooled_by_feeds_the_check(masked, masked_model, tiny_model, test_batch):
    """Square runs last in `strong`, so `fooled_by == square` counts the images only it fooled."""
    x, y = test_batch[0][:N], test_batch[1][:N]
    model = masked_model if masked else tiny_model
    res = strong_detailed(
        model, x, y, eps=EPS, steps=10, square_queries=300, generator=torch.Generator().manual_seed(0)
    )
    only_square = int((res.fooled_by == res.component_names.index("square")).sum())
    n_correct = int((res.fooled_by != -2).sum())
    check = sanity.gradient_free_not_stronger(n_correct, only_square, ["strong"])
    assert check["passed"] is (not masked), check["detail"]
    if masked:
        assert (res.fooled_by[res.success] == res.component_names.index("square")).float().mean() > 0.9
