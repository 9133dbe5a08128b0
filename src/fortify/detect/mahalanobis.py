"""The Mahalanobis detector's score (Lee et al. 2018), fitted in numpy, evaluated in torch.

Per layer: class means mu_c and one tied covariance S of the class-centred features of clean
training images. The layer's score is min_c sqrt((f - mu_c)^T S^-1 (f - mu_c)), the Mahalanobis
distance to the nearest class mean (Lee's confidence score is minus its square: same ranking,
higher = more anomalous here). A logistic regression on the per-layer distances turns them into
one detector logit. The head sees distances, not their logs: a log rewards an input for sitting
unusually close to a class mean in one layer (log d -> -inf), which an adaptive attacker exploits
to hide a large distance in another layer; a distance contributes at least 0.

Shrinkage: 738 training images and 512 features (ResNet layer4) make the empirical covariance
nearly singular, and its inverse would blow up along directions the training set never varied in;
the covariance is shrunk towards a scaled identity, (1 - a) S + a tr(S)/d I, with a chosen by
Ledoit-Wolf ("auto") or given.

Everything after the features is a torch module of buffers, so the detector logit is
differentiable end to end and an adaptive attacker can follow its gradient.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fortify.errors import ConfigError

# Keeps sqrt's gradient finite for an input sitting exactly on a class mean.
SQ_FLOOR = 1e-12


@dataclass
class LayerGaussian:
    """Class means (C, d) and the tied covariance's whitening matrix W: (f - mu) W has identity
    covariance, so the squared Mahalanobis distance is ||(f - mu) W||^2."""

    means: np.ndarray
    whiten: np.ndarray
    shrinkage: float

    @property
    def precision(self) -> np.ndarray:
        return self.whiten @ self.whiten.T


def shrunk_covariance(centered: np.ndarray, shrinkage: float | str = "auto") -> tuple[np.ndarray, float]:
    """(covariance, shrinkage used) of already-centred rows; "auto" = Ledoit-Wolf's coefficient."""
    n, d = centered.shape
    emp = centered.T @ centered / n
    if shrinkage == "auto":
        from sklearn.covariance import ledoit_wolf_shrinkage

        a = float(ledoit_wolf_shrinkage(centered, assume_centered=True))
    else:
        a = float(shrinkage)
        if not 0.0 <= a <= 1.0:
            raise ConfigError(f"shrinkage must be 'auto' or in [0, 1], got {shrinkage!r}")
    target = np.trace(emp) / d
    return (1.0 - a) * emp + a * target * np.eye(d), a


def fit_gaussian(
    features: np.ndarray, labels: np.ndarray, num_classes: int, shrinkage: float | str = "auto"
) -> LayerGaussian:
    """Class-conditional Gaussians with a tied, shrunk covariance, in float64."""
    f = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    missing = [c for c in range(num_classes) if not (labels == c).any()]
    if missing:
        raise ConfigError(f"no training image of class {missing[0]}: cannot fit the detector's Gaussians")
    means = np.stack([f[labels == c].mean(axis=0) for c in range(num_classes)])
    cov, a = shrunk_covariance(f - means[labels], shrinkage)
    try:
        chol = np.linalg.cholesky(cov)  # cov = L L^T, so S^-1 = L^-T L^-1 and W = L^-T
    except np.linalg.LinAlgError as e:
        raise ConfigError(
            f"the detector's feature covariance ({f.shape[1]} dims, {len(f)} images) is singular; "
            "use shrinkage='auto' or a value > 0"
        ) from e
    from scipy.linalg import solve_triangular

    whiten = solve_triangular(chol, np.eye(len(cov)), lower=True).T
    return LayerGaussian(means, whiten, a)


class MahalanobisScore(nn.Module):
    """Per-layer scores min_c ||(f - mu_c) W|| and the logistic head's logit, in float32."""

    def __init__(self, gaussians: Sequence[LayerGaussian]) -> None:
        super().__init__()
        self.num_layers = len(gaussians)
        for i, g in enumerate(gaussians):
            self.register_buffer(f"means{i}", torch.as_tensor(g.means, dtype=torch.float32))
            self.register_buffer(f"whiten{i}", torch.as_tensor(g.whiten, dtype=torch.float32))
        # Logistic head on the distances; their plain sum until `set_head` is called.
        self.register_buffer("weight", torch.ones(self.num_layers))
        self.register_buffer("bias", torch.zeros(()))

    def layer_scores(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """(N, L): for each layer the Mahalanobis distance to the nearest class mean."""
        out = []
        for i, f in enumerate(features):
            means, whiten = getattr(self, f"means{i}"), getattr(self, f"whiten{i}")
            diff = f.float()[:, None, :] - means[None]  # (N, C, d)
            out.append((diff @ whiten).square().sum(dim=2).amin(dim=1).clamp_min(SQ_FLOOR).sqrt())
        return torch.stack(out, dim=1)

    def head(self, scores: torch.Tensor) -> torch.Tensor:
        return scores @ self.weight + self.bias

    def set_head(self, weight: np.ndarray, bias: float) -> None:
        device = self.weight.device
        self.weight = torch.as_tensor(np.asarray(weight, dtype=np.float32), device=device)
        self.bias = torch.tensor(float(bias), device=device)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.head(self.layer_scores(features))


def fit_head(clean_scores: np.ndarray, adv_scores: np.ndarray, *, c: float = 1.0) -> tuple[np.ndarray, float]:
    """Logistic regression (scikit-learn) of adversarial (1) vs clean (0) on per-layer distances,
    standardised inside; returns (weight, bias) acting on the unstandardised distances.

    Classes are balanced by weight: a few fooled adversarial examples against many clean ones
    would otherwise teach the head to call everything clean."""
    from sklearn.linear_model import LogisticRegression

    z = np.concatenate([clean_scores, adv_scores]).astype(np.float64)
    target = np.r_[np.zeros(len(clean_scores)), np.ones(len(adv_scores))]
    if len(clean_scores) == 0 or len(adv_scores) == 0:
        raise ConfigError("the detector's logistic regression needs both clean and adversarial examples")
    mu, sd = z.mean(axis=0), z.std(axis=0) + 1e-12
    lr = LogisticRegression(C=c, class_weight="balanced", max_iter=1000).fit((z - mu) / sd, target)
    w = lr.coef_[0] / sd
    return w, float(lr.intercept_[0] - (w * mu).sum())
