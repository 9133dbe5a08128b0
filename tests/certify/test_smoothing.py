"""CERTIFY / PREDICT against closed forms and degenerate base classifiers."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import norm
from statsmodels.stats.proportion import proportion_confint
from torch import nn

from fortify.certify import (
    ABSTAIN,
    certify,
    lower_confidence_bound,
    max_certifiable_radius,
    predict_from_counts,
    smoothed_counts,
)
from fortify.certify.metrics import abstain_block, certified_at


class Constant(nn.Module):
    """Votes for one class whatever the input."""

    def __init__(self, cls: int, num_classes: int = 3):
        super().__init__()
        self.cls, self.num_classes = cls, num_classes

    def forward(self, x):
        logits = torch.zeros(x.shape[0], self.num_classes)
        logits[:, self.cls] = 1.0
        return logits


class NoisePicker(nn.Module):
    """Argmax of three pixels: on a constant image under iid noise, a uniformly random class."""

    def forward(self, x):
        return x.flatten(1)[:, :3]


class NegativeDetector(nn.Module):
    """Class 1 when any pixel is below 0 (only possible if the noise is not clipped), else class 0."""

    def forward(self, x):
        neg = (x.flatten(1) < 0).any(dim=1).float()
        return torch.stack([1 - neg, neg], dim=1)


def _records(certs, labels):
    return [
        {"index": i, "label": int(y), "prediction": c.prediction, "radius": c.radius}
        for i, (c, y) in enumerate(zip(certs, labels, strict=True))
    ]


@pytest.mark.parametrize("n,alpha", [(100, 0.001), (1000, 0.001), (500, 0.05)])
def test_constant_classifier_bound_and_radius_have_the_closed_form(n, alpha):
    sigma = 0.25
    x = torch.rand(4, 1, 8, 8)
    certs = certify(
        Constant(2), x, sigma=sigma, n0=10, n=n, alpha=alpha, batch_size=64, generator=torch.Generator()
    )
    for c in certs:
        assert c.counts_estimate == [0, 0, n] and c.counts_select == [0, 0, 10]
        assert c.prediction == 2
        assert c.p_lower == pytest.approx(alpha ** (1 / n), rel=1e-9)
        assert c.radius == pytest.approx(sigma * norm.ppf(alpha ** (1 / n)), rel=1e-9)
        assert c.radius == pytest.approx(max_certifiable_radius(sigma, n, alpha), rel=1e-12)
    # Cohen et al.'s code computes the bound with statsmodels; ours is the same number.
    assert certs[0].p_lower == pytest.approx(proportion_confint(n, n, alpha=2 * alpha, method="beta")[0])
    # Right class: certified everywhere up to the radius. Wrong class: certified, but never correct.
    right, wrong = torch.full((4,), 2), torch.zeros(4, dtype=torch.long)
    r = certs[0].radius
    assert certified_at(_records(certs, right), r)["accuracy"] == 1.0
    assert certified_at(_records(certs, right), r + 1e-6)["accuracy"] == 0.0
    for radius in (0.0, r / 2, r):
        assert certified_at(_records(certs, wrong), radius)["accuracy"] == 0.0
    assert abstain_block(_records(certs, wrong))["count"] == 0


@pytest.mark.parametrize("k,n", [(0, 50), (1, 50), (37, 100), (600, 1000), (999, 1000)])
def test_lower_bound_matches_statsmodels_one_sided_clopper_pearson(k, n):
    alpha = 0.001
    expected = proportion_confint(k, n, alpha=2 * alpha, method="beta")[0]
    assert lower_confidence_bound(k, n, alpha) == pytest.approx(expected, abs=1e-12)


def test_uniformly_random_votes_abstain():
    x = torch.full((20, 1, 4, 4), 0.5)
    certs = certify(
        NoisePicker(), x, sigma=0.5, n0=100, n=1000, alpha=0.001, batch_size=500,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    counts = torch.tensor([c.counts_estimate for c in certs])
    assert (counts.sum(1) == 1000).all()
    assert (counts.float().mean(0) / 1000 - 1 / 3).abs().max() < 0.03  # the votes really are uniform
    assert sum(c.prediction == ABSTAIN for c in certs) >= 19  # "almost all": in practice every one
    assert all(c.p_lower < 0.5 and (c.radius is None) == (c.prediction == ABSTAIN) for c in certs)


def test_counts_sum_to_n_are_seeded_and_noise_is_not_clipped():
    x = torch.zeros(3, 1, 6, 6)
    kw = dict(sigma=0.25, n=130, batch_size=50)
    a = smoothed_counts(NegativeDetector(), x, generator=torch.Generator().manual_seed(1), **kw)
    assert a.tolist() == [[0, 130]] * 3  # x = 0 plus unclipped noise always has negative pixels
    picker = torch.full((3, 1, 4, 4), 0.5)
    b1 = smoothed_counts(NoisePicker(), picker, generator=torch.Generator().manual_seed(1), **kw)
    b2 = smoothed_counts(NoisePicker(), picker, generator=torch.Generator().manual_seed(1), **kw)
    b3 = smoothed_counts(NoisePicker(), picker, generator=torch.Generator().manual_seed(2), **kw)
    assert torch.equal(b1, b2) and not torch.equal(b1, b3)
    assert (b1.sum(1) == 130).all()


def test_predict_abstains_on_a_close_vote_and_answers_a_clear_one():
    assert predict_from_counts(torch.tensor([5, 990, 5]), 0.001) == 1
    assert predict_from_counts(torch.tensor([340, 330, 330]), 0.001) == ABSTAIN
    assert predict_from_counts(torch.tensor([0, 0, 0]), 0.001) == ABSTAIN
