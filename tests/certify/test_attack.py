"""Smoothed PGD breaks what it can and never what is certified (tiny synthetic linear case)."""

from __future__ import annotations

import torch
from torch import nn

from fortify.certify import CertifySettings, smoothed_counts, smoothed_pgd
from fortify.certify.images import certify_batch
from fortify.certify.metrics import certified_at, consistency_check, empirical_at
from fortify.runtime import Runtime

RUNTIME = Runtime.resolve("cpu", "fp32", channels_last=False)
SIGMA = 0.25


class Templates(nn.Module):
    """Linear classifier: logit c = <u_c, x - 0.5> for unit-norm templates u_c (an undefended model)."""

    def __init__(self, u: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(u.clone())

    def forward(self, x):
        return 10 * (x.flatten(1) - 0.5) @ self.weight.t()


def _problem(n_per_class: int = 4, scale: float = 0.8):
    g = torch.Generator().manual_seed(0)
    u = torch.randint(0, 2, (3, 64), generator=g).float() * 2 - 1
    u = u / u.norm(dim=1, keepdim=True)  # entries +-1/8
    y = torch.arange(3).repeat_interleave(n_per_class)
    x = (0.5 + scale * u[y] + 0.01 * torch.randn(len(y), 64, generator=g)).clamp(0, 1).view(-1, 1, 8, 8)
    return Templates(u), x, y


def _majority_acc(model, x, y, seed: int) -> float:
    votes = smoothed_counts(
        model, x, sigma=SIGMA, n=200, batch_size=400, generator=torch.Generator().manual_seed(seed)
    )
    return float((votes.argmax(1) == y).float().mean())


def test_smoothed_pgd_lowers_smoothed_accuracy_and_stays_in_the_ball():
    model, x, y = _problem()
    clean = _majority_acc(model, x, y, 1)
    assert clean == 1.0
    x_adv = smoothed_pgd(
        model, x, y, sigma=SIGMA, eps=0.9, steps=10, samples=8, generator=torch.Generator().manual_seed(2)
    )
    assert ((x_adv - x).flatten(1).norm(dim=1) <= 0.9 + 1e-5).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert _majority_acc(model, x_adv, y, 3) < 0.5  # not a no-op: most votes now go elsewhere
    assert all(p.requires_grad for p in model.parameters()) and model.weight.grad is None


def test_empirical_accuracy_never_below_certified_accuracy():
    model, x, y = _problem()
    settings = CertifySettings(
        sigma=SIGMA,
        n0=50,
        n=300,
        alpha=0.001,
        batch_size=300,
        attack_steps=10,
        attack_samples=8,
        attack_n=200,
    )
    radii = [0.0, 0.2, 0.35, 0.9]
    records = certify_batch(
        model, x, y, list(range(len(y))), seed=0, attack_radii=radii, settings=settings, runtime=RUNTIME
    )
    certified = [certified_at(records, r) for r in radii]
    empirical = [empirical_at(records, r) for r in radii]
    for c, e in zip(certified, empirical, strict=True):
        assert e["correct"] >= c["correct"], (c, e)
        assert e["broken"] == []
    assert certified[1]["accuracy"] > 0.5  # a non-trivial certificate at r = 0.2
    assert certified[-1]["accuracy"] == 0.0 and empirical[-1]["accuracy"] < empirical[0]["accuracy"]
    assert consistency_check(certified, empirical)["passed"]
    # Nested balls: once wrong, an image stays wrong at every larger radius without a new attack.
    for rec in records:
        wrong = False
        for a in rec["attack"]:
            if wrong:
                assert not a["attacked"] and a["majority"] != rec["label"]
            wrong = wrong or a["majority"] != rec["label"]


def test_consistency_check_fails_when_a_certified_point_is_broken():
    rec = {
        "index": 0,
        "label": 0,
        "prediction": 0,
        "radius": 0.5,
        "attack": [{"radius": 0.25, "majority": 1, "predict": 1, "attacked": True}],
    }
    certified, empirical = [certified_at([rec], 0.25)], [empirical_at([rec], 0.25)]
    check = consistency_check(certified, empirical)
    assert not check["passed"] and empirical[0]["broken"] == [0]
    assert "bug or a broken certificate" in check["detail"]
