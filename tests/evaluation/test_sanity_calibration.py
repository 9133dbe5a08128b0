"""Calibration of the sanity checks: silent on healthy models, loud on the broken ones they exist for.

Healthy: two architectures at three image sizes (smallcnn at 32 and 16 px, an MLP at 24 px), each
trained for a few epochs on phantom data (seconds), evaluated end to end: every check must PASS. A check
that FAILs here is a false alarm (the large-eps check once failed a healthy CT CNN because its own
attack was too weak). Broken, each must FAIL the checks named for it:
- gradient masking: the healthy CNN behind an input quantisation x -> round(8x)/8 (zero gradient
  everywhere; the forward pass is almost the same function) or behind torch.sign;
- a model that ignores its input (constant logits, input gradient zero);
- a weak headline attack: PGD with 1 step of a tiny step size, so more steps gain a lot.
"""

from __future__ import annotations

import pytest
import torch
from fortify_eval_fixtures import eval_settings
from torch import nn

from fortify.data import load_split, make_split
from fortify.evaluation import evaluate_checkpoint
from fortify.models import build_model, wrap_module
from fortify.runtime import seed_everything

pytestmark = pytest.mark.slow

DATA = "phantom:n=60"
EPS = 8 / 255
ATTACKS = [
    "fgsm:eps=8/255",
    "pgd:eps=8/255,steps=20",
    "cw:steps=50,binary_steps=4,c=1,max_l2=0.5",
    "strong:eps=8/255,steps=10,pgd_restarts=1,square_queries=100",
]


class MLP(nn.Module):
    def __init__(self, size: int, classes: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(size * size, 64), nn.ReLU(), nn.Linear(64, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Quantise(nn.Module):
    """Round to 8 gray levels: torch.round's gradient is zero everywhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 8) / 8


class Sign(nn.Module):
    """Binarise around mid-gray: torch.sign's gradient is zero everywhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (torch.sign(x - 0.5) + 1) / 2


class Constant(nn.Module):
    """Ignores its input: fixed logits (the input enters with weight 0, so its gradient is zero)."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.tensor([0.0, 1.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(x), -1) + 0 * x.flatten(1).sum(1, keepdim=True)


def _trained(arch: str, size: int, epochs: int) -> nn.Module:
    """`arch` trained on the default split's training images (the split evaluation makes for a module)."""
    seed_everything(0)
    x, y = load_split(make_split(DATA, seed=0, image_size=size), DATA, image_size=size)["train"].tensors()
    model = MLP(size) if arch == "mlp" else build_model(arch, 3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(epochs):
        model.train()
        for _ in range(0, len(x), 16):
            b = torch.randperm(len(x))[:16]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[b]), y[b]).backward()
            opt.step()
    return model.eval()


def _checks(model: nn.Module, size: int, attacks: list[str] = ATTACKS) -> dict[str, dict]:
    settings = eval_settings(
        attacks=attacks,
        eps=EPS,
        eps_curve=(0.0, 4 / 255, 8 / 255),
        curve_attacks=("pgd:steps=5",),
        batch_size=32,
        examples_per_class=1,
    )
    wrapped = wrap_module(model, channels=1, image_size=size, num_classes=3)
    results = evaluate_checkpoint(wrapped, data=DATA, settings=settings, progress=False)
    assert results["clean"]["accuracy"] > 0.5 or isinstance(model, Constant)
    return {c["check"]: c for c in results["sanity"]}


def _failed(checks: dict[str, dict]) -> set[str]:
    return {name for name, c in checks.items() if not c["passed"]}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are tiny: one thread is 3x faster than two on a shared two-core machine (measured:
    the 32 px CNN trains in 5 s vs 15 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cnn(one_thread) -> nn.Module:
    return _trained("smallcnn", 32, epochs=8)


@pytest.mark.parametrize("arch, size, epochs", [("smallcnn", 32, 8), ("smallcnn", 16, 8), ("mlp", 24, 15)])
def test_every_check_passes_on_a_healthy_model(arch, size, epochs, cnn):
    model = cnn if (arch, size) == ("smallcnn", 32) else _trained(arch, size, epochs)
    checks = _checks(model, size)
    assert not _failed(checks), {k: checks[k]["detail"] for k in _failed(checks)}


@pytest.mark.parametrize("mask", [Quantise, Sign])
def test_gradient_masking_fails(mask, cnn):
    failed = _failed(_checks(nn.Sequential(mask(), cnn).eval(), 32))
    assert any("gradient-free" in name for name in failed), failed


def test_a_model_that_ignores_its_input_fails():
    failed = _failed(_checks(Constant().eval(), 32))
    assert "accuracy ~0 at a large eps" in failed, failed


def test_a_weak_headline_attack_fails(cnn):
    weak = [a if not a.startswith("pgd") else "pgd:eps=8/255,steps=1,alpha=0.0005" for a in ATTACKS]
    failed = _failed(_checks(cnn, 32, weak))
    assert "PGD converged (more steps/restarts do not lower accuracy)" in failed, failed
