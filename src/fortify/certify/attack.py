"""An empirical attack on the smoothed classifier: SmoothAdv-style PGD (Salman et al. 2019).

The smoothed classifier's votes are not differentiable, so the attack works on the "soft" smoothed
classifier G(x) = E_delta[softmax(f(x + delta))], estimated with m noise samples per step (expectation
over transformation), and maximizes -log G(x)_y with L2 PGD. Its result is then judged by the hard
smoothed classifier itself (votes over fresh noise), the object the certificate is about.
"""

from __future__ import annotations

import torch
from torch import nn

from fortify.attacks import pgd


class SoftSmoothed(nn.Module):
    """log E[softmax(f(x + N(0, sigma^2)))] over `samples` fresh noise draws per call.

    Returned as log-probabilities so that fortify's PGD, whose "ce" loss takes log-softmax of what the
    model returns, maximizes exactly SmoothAdv's objective -log G(x)_y (log_softmax of log-probabilities
    that sum to one is the identity)."""

    def __init__(self, model: nn.Module, sigma: float, samples: int, generator: torch.Generator):
        super().__init__()
        self.model = model
        self.sigma = sigma
        self.samples = samples
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = torch.randn((self.samples, *x.shape), generator=self.generator, dtype=torch.float32)
        # Unclipped noise, as in smoothed_counts: the attack targets the same smoothed classifier.
        z = x.unsqueeze(0) + self.sigma * noise.to(device=x.device, dtype=x.dtype)
        logits = self.model(z.reshape(-1, *x.shape[1:])).float()
        probs = logits.softmax(dim=1).reshape(self.samples, x.shape[0], -1).mean(dim=0)
        return probs.clamp_min(1e-12).log()


def smoothed_pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    sigma: float,
    eps: float,
    steps: int,
    samples: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """x_adv with ||x_adv - x||_2 <= eps, in [0,1], attacking the soft smoothed classifier of `model`.

    Like every fortify attack it does not enter autocast itself (the caller does) and leaves the model's
    mode and parameter gradients as they were (fortify.attacks.pgd guards the wrapper and its submodule).
    """
    if eps <= 0:
        return x.detach().clone()
    soft = SoftSmoothed(model, sigma, samples, generator)
    return pgd(soft, x, y, eps=eps, norm="l2", steps=steps, random_start=True, generator=generator)
