"""Classifier + Mahalanobis detector as one differentiable module: x -> (class logits, detector logit).

One forward pass of the classifier gives both outputs (the features are tapped by hooks), so an
adaptive attack pays one forward/backward per step for the joint objective.

Lee et al.'s input preprocessing (a small step x - e * sign(grad_x score) per layer before scoring)
is available as `preprocess_eps` but off by default: it costs a forward/backward per layer for every
scored input, its step size is tuned on adversarial data in the paper, and it makes the score a
function of a gradient's sign, which an attacker differentiates as the identity (the sign is
piecewise constant), so it adds cost without a defence an adaptive attacker has to work around.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fortify.detect.features import tap
from fortify.detect.mahalanobis import MahalanobisScore


class Detector(nn.Module):
    """`forward(x)` -> (logits (N, K) float32, detector logit (N,) float32; higher = adversarial).

    `threshold` is the detector logit above which an input is flagged (set on clean validation
    images at the target false-positive rate); NaN until fitted."""

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str],
        score: MahalanobisScore,
        *,
        threshold: float = float("nan"),
        preprocess_eps: float = 0.0,
    ) -> None:
        super().__init__()
        self.model = model
        self.layers = list(layers)
        self.score = score
        self.threshold = float(threshold)
        self.preprocess_eps = float(preprocess_eps)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        with tap(self.model, self.layers) as store:
            logits = self.model(x)
        return logits.float(), [store[n] for n in self.layers]

    def layer_scores(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, per-layer scores (N, L)); with preprocessing, layer l is scored at its own
        step x - e * sign(grad_x score_l(x)), as in Lee et al."""
        logits, feats = self.features(x)
        scores = self._scores(feats)
        if self.preprocess_eps <= 0:
            return logits, scores
        with torch.enable_grad():
            x0 = x.detach().requires_grad_(True)
            s0 = self._scores(self.features(x0)[1])
            moved = []
            for i in range(len(self.layers)):
                (g,) = torch.autograd.grad(s0[:, i].sum(), x0, retain_graph=i + 1 < len(self.layers))
                # x (not x0) so an attacker's gradient flows through; the sign is a constant there.
                x_l = (x - self.preprocess_eps * g.sign()).clamp(0.0, 1.0)
                moved.append(self._scores(self.features(x_l)[1])[:, i])
        return logits, torch.stack(moved, dim=1)

    def _scores(self, feats: list[torch.Tensor]) -> torch.Tensor:
        # The distances run in float32 even under bf16 autocast: a 512-dim quadratic form in bf16
        # would round the score far more than the detector's margin.
        with torch.autocast(device_type=feats[0].device.type, enabled=False):
            return self.score.layer_scores([f.float() for f in feats])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, scores = self.layer_scores(x)
        with torch.autocast(device_type=scores.device.type, enabled=False):
            return logits, self.score.head(scores)
