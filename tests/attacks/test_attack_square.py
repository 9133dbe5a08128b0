"""Square Attack: schedule, threat model, gradient-free, early stopping, and that it works."""

from __future__ import annotations

import importlib

import pytest
import torch
from attack_helpers import accuracy
from torch import nn

from fortify.attacks import parse_spec, square

square_module = importlib.import_module("fortify.attacks.square")  # the attribute `square` is the function


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class Recorder(nn.Module):
    """Wraps a model; records rows per forward pass and whether autograd was on."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.rows: list[int] = []
        self.grad_enabled: list[bool] = []

    def forward(self, x):
        self.rows.append(x.shape[0])
        self.grad_enabled.append(torch.is_grad_enabled())
        return self.model(x)


def test_p_schedule_is_the_papers_rescaled_to_the_budget():
    p = 0.8
    # 10,000 queries: the paper's breakpoints, p halved after 10, 50, 200, ... 8000.
    expect = {
        0: p,
        10: p,
        11: p / 2,
        50: p / 2,
        51: p / 4,
        200: p / 4,
        201: p / 8,
        1001: p / 32,
        4001: p / 128,
        8000: p / 256,
        8001: p / 512,
        9999: p / 512,
    }
    for it, value in expect.items():
        assert square_module.p_schedule(it, 10_000, p) == value, it
    # 1000 queries: the same shape, 10x compressed (query i counts as i * 10).
    assert square_module.p_schedule(1, 1000, p) == p
    assert square_module.p_schedule(2, 1000, p) == p / 2
    assert square_module.p_schedule(5, 1000, p) == p / 2
    assert square_module.p_schedule(6, 1000, p) == p / 4
    assert square_module.p_schedule(999, 1000, p) == p / 512


def test_window_sides():
    # L-inf: sqrt(p * h * w) rounded, at least 1 px, at most the image.
    assert square_module._side(0.8, 16, 16, "linf") == 14
    assert square_module._side(0.001, 16, 16, "linf") == 1
    assert square_module._side(1.0, 12, 20, "linf") == 12
    # L2: at least 3 and odd, so the eta pattern has a centre.
    assert square_module._side(0.8, 16, 16, "l2") == 15
    assert square_module._side(0.001, 16, 16, "l2") == 3


@pytest.mark.parametrize("s", [1, 2, 3, 5, 8])
def test_eta_pattern(s):
    eta = square_module._eta(s)
    assert eta.shape == (s, s)
    assert eta.norm().item() == pytest.approx(1.0)
    assert (eta[s // 2 :] < 0).all() and (eta[: s // 2] > 0).all()  # + top half, - bottom half
    # Mass concentrated in the centre of each half.
    if s >= 5:
        assert eta[s - (s - s // 2) // 2 - 1, s // 2].abs() > eta[-1, 0].abs()


@pytest.mark.parametrize("norm, eps", [("linf", 12 / 255), ("l2", 1.0)])
def test_fools_a_substantial_fraction_within_budget(norm, eps, tiny_model, test_batch):
    x, y = test_batch[0][:60], test_batch[1][:60]
    x_adv = square(tiny_model, x, y, eps=eps, norm=norm, queries=300, generator=_gen())
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(dim=1) if norm == "linf" else delta.norm(dim=1)
    assert size.max().item() <= eps + 1e-6
    assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0
    # Measured (3 seeds): clean 100%; 43% (L-inf 12/255) and 8-12% (L2 1.0) after 300 queries.
    assert accuracy(tiny_model, x_adv, y) <= 0.7 * accuracy(tiny_model, x, y)


def test_accuracy_decreases_with_eps(tiny_model, test_batch):
    x, y = test_batch[0][:60], test_batch[1][:60]
    accs = [
        accuracy(tiny_model, square(tiny_model, x, y, eps=e / 255, queries=200, generator=_gen()), y)
        for e in (0, 4, 8, 16)
    ]
    assert accs[0] == accuracy(tiny_model, x, y)  # eps=0 can change nothing
    assert all(a1 <= a0 for a0, a1 in zip(accs, accs[1:], strict=False))
    assert accs[-1] < accs[0] - 0.3


def test_linf_perturbation_sits_on_the_vertices(tiny_model, test_batch):
    """Square's L-inf search only uses +-eps per pixel (before clipping to [0, 1])."""
    x, y = test_batch[0][:20], test_batch[1][:20]
    eps = 8 / 255
    x_adv = square(tiny_model, x, y, eps=eps, queries=30, early_stop=False, generator=_gen())
    inside = (x > eps) & (x < 1 - eps)
    assert torch.allclose((x_adv - x).abs()[inside], torch.full_like(x[inside], eps), atol=1e-6)


def test_l2_perturbation_sits_on_the_sphere(tiny_model, test_batch):
    x, y = test_batch[0][:20], test_batch[1][:20]
    # Keep pixels away from 0 and 1 so clipping does not shorten the perturbation.
    x = 0.25 + 0.5 * x
    x_adv = square(tiny_model, x, y, eps=0.5, norm="l2", queries=30, early_stop=False, generator=_gen())
    norms = (x_adv - x).flatten(1).norm(dim=1)
    attacked = norms > 0
    assert torch.allclose(norms[attacked], torch.full_like(norms[attacked], 0.5), atol=1e-4)


def test_gradient_free_and_budgeted_queries(tiny_model, test_batch):
    x, y = test_batch[0][:20], test_batch[1][:20]
    model = Recorder(tiny_model)
    square(model, x, y, eps=16 / 255, queries=50, early_stop=False, generator=_gen())
    assert not any(model.grad_enabled)
    # One clean pass, then exactly `queries` per sample (the initial point is the first).
    assert model.rows[0] == 20 and sum(model.rows[1:]) == 20 * 50


def test_early_stop_cuts_the_cost_and_keeps_the_success(tiny_model, test_batch):
    x, y = test_batch[0][:40], test_batch[1][:40]
    costs, accs = [], []
    for early_stop in (True, False):
        model = Recorder(tiny_model)
        x_adv = square(model, x, y, eps=16 / 255, queries=100, early_stop=early_stop, generator=_gen())
        costs.append(sum(model.rows))
        accs.append(accuracy(tiny_model, x_adv, y))
    assert costs[0] < 0.6 * costs[1]
    # Without early stopping a fooled sample only moves to lower margins, so it stays fooled.
    assert accs[1] <= accs[0] + 0.05


def test_misclassified_inputs_are_returned_unchanged(tiny_model, test_batch):
    x, y = test_batch[0][:20], test_batch[1][:20]
    wrong = (y + 1) % 3
    x_adv = square(tiny_model, x, wrong, eps=16 / 255, queries=20, generator=_gen())
    assert torch.equal(x_adv, x)


def test_restarts_only_help(tiny_model, test_batch):
    x, y = test_batch[0][:40], test_batch[1][:40]
    one = square(tiny_model, x, y, eps=8 / 255, queries=100, generator=_gen(3))
    two = square(tiny_model, x, y, eps=8 / 255, queries=100, restarts=2, generator=_gen(3))
    # Same generator: restart 1 is identical, restart 2 only attacks the survivors.
    assert accuracy(tiny_model, two, y) <= accuracy(tiny_model, one, y)


def test_seeded_runs_are_reproducible(tiny_model, test_batch):
    x, y = test_batch[0][:10], test_batch[1][:10]
    a = square(tiny_model, x, y, eps=8 / 255, norm="l2", queries=30, generator=_gen(5))
    b = square(tiny_model, x, y, eps=8 / 255, norm="l2", queries=30, generator=_gen(5))
    assert torch.equal(a, b)


def test_non_square_images(tiny_model, test_batch):
    x = torch.nn.functional.interpolate(test_batch[0][:10], size=(9, 14), mode="bilinear").clamp(0, 1)
    y = test_batch[1][:10]
    for norm, eps in (("linf", 8 / 255), ("l2", 0.5)):
        x_adv = square(tiny_model, x, y, eps=eps, norm=norm, queries=30, generator=_gen())
        assert x_adv.shape == x.shape


def test_spec_and_bad_arguments(tiny_model, test_batch):
    spec = parse_spec("square:eps=2/255,queries=1000")
    assert spec.params == {"eps": 2 / 255, "queries": 1000}
    assert parse_spec("square:norm=l2,eps=0.5,p_init=0.3,restarts=2").threat_model().norm == "l2"
    x, y = test_batch[0][:4], test_batch[1][:4]
    with pytest.raises(ValueError):
        square(tiny_model, x.flatten(1), y, eps=0.1)  # needs (N, C, H, W)
    with pytest.raises(ValueError):
        square(tiny_model, x, y, eps=0.1, queries=0)
    with pytest.raises(ValueError):
        square(tiny_model, x, y, eps=0.1, p_init=0.0)
