"""APGD must judge and store the same iterate, also right after a checkpoint restarts from x_best.

A hand-built 3-class model on 2x2 images makes the bad case certain, whatever the random start:
the CE loss is highest at the centre of the eps-ball (mean pixel 0.5) and falls towards its
faces, and the model predicts a wrong class only on those faces. Every first step is a full sign
step, so it lands on a face: misclassified, but with a *lower* CE than the start. At the
checkpoint after that step the loss did not rise, so the step is halved and the next step starts
from x_best, the (correctly classified) start. The old code then tested the logits of the face
point and stored x_best as the adversarial example.
"""

from __future__ import annotations

import importlib

import pytest
import torch
from torch import nn

from fortify.attacks import apgd

apgd_module = importlib.import_module("fortify.attacks.apgd")

EPS = 0.25  # around x = 0.5 the ball is [0.25, 0.75] per pixel, inside [0, 1]


class CentrePeakedCE(nn.Module):
    """Logits (0, -0.05 + 0.055 s, -0.05 - 3 s) with s = 4 |mean(x) - 0.5| in [0, 1] on the ball.

    Class 0 wins while s < 0.91, class 1 from there to the faces (s = 1). CE for label 0 is
    log(1 + e^z1 + e^z2), strictly decreasing in s because z2 falls faster than z1 rises
    (3 e^-3.05 > 0.055 e^0.005): the start (s < 0.91 with probability ~1) has a higher loss than
    the misclassified face point, and its gradient points towards the centre, so the sign step
    overshoots to the opposite face.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = 4 * (x.flatten(1).mean(dim=1) - 0.5).abs()
        zero = torch.zeros_like(s)
        return torch.stack([zero, -0.05 + 0.055 * s, -0.05 - 3.0 * s], dim=1)


def _pred(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


@pytest.mark.parametrize("steps", [1, 4])  # _checkpoints(1) == {1}, _checkpoints(4) == {1, 2, 3, 4}
@pytest.mark.parametrize("early_stop", [True, False])
def test_every_reported_success_is_misclassified_when_rescored(steps, early_stop):
    model = CentrePeakedCE()
    n = 16
    x = torch.full((n, 1, 2, 2), 0.5)
    y = torch.zeros(n, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    out, hit, _ = apgd_module._run(
        model,
        x,
        y,
        None,
        reach=False,
        loss="ce",
        eps=EPS,
        norm="linf",
        steps=steps,
        rho=0.75,
        early_stop=early_stop,
        generator=gen,
    )
    # Every first step lands on a face, so APGD rightly finds every sample fooled ...
    assert hit.all()
    # ... and the images it returns for them must be misclassified too.
    assert (_pred(model, out[hit]) != y[hit]).all()
    assert (out - x).abs().max().item() <= EPS + 1e-6


def test_public_apgd_returns_misclassified_images():
    model = CentrePeakedCE()
    x = torch.full((8, 1, 2, 2), 0.5)
    y = torch.zeros(8, dtype=torch.long)
    x_adv = apgd(model, x, y, eps=EPS, steps=4, generator=torch.Generator().manual_seed(1))
    assert (_pred(model, x_adv) != y).all()
