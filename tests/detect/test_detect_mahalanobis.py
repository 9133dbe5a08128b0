"""The Mahalanobis score against references with known answers (synthetic features, no model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import mahalanobis

from fortify.detect import MahalanobisScore, auroc, fit_gaussian, fit_head
from fortify.errors import ConfigError


def _classes(rng, n_per_class, means, cov):
    x = np.concatenate([rng.multivariate_normal(m, cov, n_per_class) for m in means])
    y = np.repeat(np.arange(len(means)), n_per_class)
    return x, y


def _score(gaussian, feats) -> np.ndarray:
    with torch.no_grad():
        return (
            MahalanobisScore([gaussian])
            .layer_scores([torch.as_tensor(feats, dtype=torch.float32)])[:, 0]
            .numpy()
        )


def test_score_equals_scipy_mahalanobis_with_the_same_shrunk_covariance():
    rng = np.random.default_rng(0)
    d = 6
    a = rng.normal(size=(d, d))
    means = rng.normal(scale=3, size=(3, d))
    x, y = _classes(rng, 80, means, a @ a.T + 0.5 * np.eye(d))
    g = fit_gaussian(x, y, 3, shrinkage=0.1)
    # Reference built independently: class means, pooled covariance of the centred rows, shrunk.
    mu = np.stack([x[y == c].mean(0) for c in range(3)])
    centred = x - mu[y]
    emp = centred.T @ centred / len(x)
    cov = 0.9 * emp + 0.1 * np.trace(emp) / d * np.eye(d)
    vi = np.linalg.inv(cov)
    probe = rng.normal(scale=4, size=(25, d))
    ref = np.array([min(mahalanobis(p, mu[c], vi) for c in range(3)) for p in probe])
    np.testing.assert_allclose(_score(g, probe), ref, rtol=2e-4)
    np.testing.assert_allclose(g.precision, vi, rtol=1e-8, atol=1e-10)


def test_auto_shrinkage_is_ledoit_wolf():
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(1)
    x, y = _classes(rng, 30, rng.normal(size=(3, 20)), np.eye(20))
    g = fit_gaussian(x, y, 3, shrinkage="auto")
    mu = np.stack([x[y == c].mean(0) for c in range(3)])
    lw = LedoitWolf(assume_centered=True).fit(x - mu[y])
    assert 0 < g.shrinkage < 1
    np.testing.assert_allclose(g.precision, np.linalg.inv(lw.covariance_), rtol=1e-6)


def test_shrinkage_is_what_makes_more_dims_than_images_usable():
    rng = np.random.default_rng(2)
    x, y = _classes(rng, 8, rng.normal(size=(3, 50)), np.eye(50))  # 24 images, 50 dims: singular
    with pytest.raises(ConfigError, match="singular"):
        fit_gaussian(x, y, 3, shrinkage=0.0)
    s = _score(fit_gaussian(x, y, 3, shrinkage="auto"), rng.normal(size=(5, 50)))
    assert np.isfinite(s).all() and (s > 0).all()


def test_auroc_known_answers_along_low_and_high_variance_directions():
    """Anisotropic features: a shift of 1.0 along a direction of std 0.1 is 10 standard deviations
    (Mahalanobis AUROC ~1, while a Euclidean distance would barely see it); the same shift along a
    direction of std 10 is invisible (~0.5); no shift at all must give ~0.5."""
    rng = np.random.default_rng(3)
    d = 8
    std = np.r_[0.1, 10.0, np.ones(d - 2)]
    cov = np.diag(std**2)
    means = np.zeros((3, d))
    means[:, 2] = [-5.0, 0.0, 5.0]  # well-separated classes along a unit-variance axis
    x, y = _classes(rng, 300, means, cov)
    g = fit_gaussian(x, y, 3, shrinkage=0.0)
    clean, cy = _classes(rng, 150, means, cov)
    same, _ = _classes(rng, 150, means, cov)
    low, high = np.zeros(d), np.zeros(d)
    low[0], high[1] = 1.0, 1.0
    neg = _score(g, clean)
    assert auroc(neg, _score(g, same + low)) > 0.99
    assert abs(auroc(neg, _score(g, same + high)) - 0.5) < 0.08
    assert abs(auroc(neg, _score(g, same)) - 0.5) < 0.08
    # A Euclidean distance to the nearest mean cannot see the low-variance shift: the test above
    # really depends on the covariance.
    euclid = lambda f: np.min(np.linalg.norm(f[:, None] - means[None], axis=-1), axis=1)  # noqa: E731
    assert auroc(euclid(clean), euclid(same + low)) < 0.7


def test_head_weights_reproduce_sklearn_decision_function():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(4)
    clean = np.abs(rng.normal(3.0, 1.0, size=(60, 3)))
    adv = np.abs(rng.normal(5.0, 1.5, size=(40, 3)))
    w, b = fit_head(clean, adv)
    z = np.r_[clean, adv]
    mu, sd = z.mean(0), z.std(0)
    lr = LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000)
    lr.fit((z - mu) / sd, np.r_[np.zeros(60), np.ones(40)])
    score = MahalanobisScore([])
    score.set_head(w, b)
    torch_logit = score.head(torch.as_tensor(np.r_[clean, adv], dtype=torch.float32)).numpy()
    np.testing.assert_allclose(torch_logit, lr.decision_function((z - mu) / sd), rtol=1e-4, atol=1e-4)
    assert (w > 0).all()  # larger distances mean adversarial in this synthetic case
