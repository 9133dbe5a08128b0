"""Randomized smoothing (Cohen, Rosenfeld & Kolter 2019): votes under Gaussian noise, CERTIFY and PREDICT.

The smoothed classifier g(x) = argmax_c P(f(x + delta) = c), delta ~ N(0, sigma^2 I), is estimated
by Monte Carlo votes of the base classifier f. CERTIFY returns g's class with an L2 radius
sigma * Phi^-1(p_lower) within which g provably does not change, with probability >= 1 - alpha
over the noise; PREDICT returns g's class when a binomial test says the top class really wins.
Both abstain rather than guess.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from scipy.stats import beta as beta_dist
from scipy.stats import binomtest, norm

from fortify.runtime import Runtime

ABSTAIN = -1


@torch.no_grad()
def smoothed_counts(
    model: torch.nn.Module,
    x: torch.Tensor,
    *,
    sigma: float,
    n: int,
    batch_size: int,
    generator: torch.Generator,
    runtime: Runtime | None = None,
    num_classes: int | None = None,
) -> torch.Tensor:
    """Votes (N, C) int64: per image, how many of `n` noisy copies x + N(0, sigma^2) the base model puts
    in each class (argmax of its logits).

    The noise samples of all images form one stream cut into forward batches of `batch_size`, so small
    n (n0 = 100) still fills a batch. Noise is drawn on the CPU from `generator` and moved to x's device:
    the same seed gives the same votes on any device. Forward passes run under `runtime.autocast()`.
    """
    if n < 1 or batch_size < 1:
        raise ValueError(f"n and batch_size must be >= 1, got n={n}, batch_size={batch_size}")
    was_training = model.training
    model.eval()
    autocast = runtime.autocast if runtime is not None else contextlib.nullcontext
    counts: torch.Tensor | None = None
    if num_classes is not None:
        counts = torch.zeros(x.shape[0], num_classes, dtype=torch.long)
    total = x.shape[0] * n
    try:
        for start in range(0, total, batch_size):
            stop = min(start + batch_size, total)
            owner = torch.arange(start, stop) // n  # which image each noisy copy belongs to
            noise = torch.randn((stop - start, *x.shape[1:]), generator=generator, dtype=torch.float32)
            # No clipping to [0,1]: the certificate is about the base classifier on x + noise with Gaussian
            # noise; clipping would replace that distribution by a censored one, for which the Neyman-Pearson
            # argument behind the radius does not hold (and it is what training with `noise` mode saw too).
            batch = x[owner.to(x.device)] + sigma * noise.to(device=x.device, dtype=x.dtype)
            if runtime is not None:
                batch = runtime.to_device(batch)
            with autocast():
                logits = model(batch)
            pred = logits.argmax(dim=1).cpu()
            if counts is None:
                counts = torch.zeros(x.shape[0], int(logits.shape[1]), dtype=torch.long)
            counts.index_put_((owner, pred), torch.ones_like(pred), accumulate=True)
    finally:
        model.train(was_training)
    return counts if counts is not None else torch.zeros(0, 0, dtype=torch.long)


def lower_confidence_bound(k: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson lower bound on a binomial proportion with k successes in n.

    Equal to statsmodels' proportion_confint(k, n, alpha=2*alpha, method="beta")[0], as in Cohen et al.'s
    code; when all n agree it is alpha**(1/n)."""
    if not 0 <= k <= n or n < 1:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    return 0.0 if k == 0 else float(beta_dist.ppf(alpha, k, n - k + 1))


def radius_from_bound(p_lower: float, sigma: float) -> float | None:
    """sigma * Phi^-1(p_lower) (Cohen et al. Theorem 1 with p_B <= 1 - p_A); None (abstain) below 1/2."""
    return None if p_lower < 0.5 else float(sigma * norm.ppf(p_lower))


def max_certifiable_radius(sigma: float, n: int, alpha: float) -> float:
    """The largest radius CERTIFY can return with n samples: all n votes agree, p_lower = alpha**(1/n)."""
    return float(sigma * norm.ppf(alpha ** (1.0 / n)))


@dataclass
class Certificate:
    prediction: int  # ABSTAIN (-1) when p_lower < 1/2
    radius: float | None  # L2 radius in [0,1] pixel units; None when abstaining
    p_lower: float
    counts_select: list[int]  # n0 votes that chose the class
    counts_estimate: list[int]  # n votes that bound its probability


def certify_from_counts(
    counts_select: torch.Tensor, counts_estimate: torch.Tensor, *, sigma: float, alpha: float
) -> Certificate:
    """CERTIFY's decision for one image from its two independent vote vectors."""
    c_hat = int(counts_select.argmax())
    n = int(counts_estimate.sum())
    p_lower = lower_confidence_bound(int(counts_estimate[c_hat]), n, alpha)
    radius = radius_from_bound(p_lower, sigma)
    return Certificate(
        prediction=ABSTAIN if radius is None else c_hat,
        radius=radius,
        p_lower=p_lower,
        counts_select=[int(v) for v in counts_select],
        counts_estimate=[int(v) for v in counts_estimate],
    )


def certify(
    model: torch.nn.Module,
    x: torch.Tensor,
    *,
    sigma: float,
    n0: int,
    n: int,
    alpha: float,
    batch_size: int,
    generator: torch.Generator,
    runtime: Runtime | None = None,
) -> list[Certificate]:
    """CERTIFY (Cohen et al. 2019, Algorithm "certify") for every image of x.

    The class is selected with n0 votes and its probability bounded with n fresh votes: reusing the
    selection votes would bias the bound upward (the winner of a noisy vote looks stronger than it is)."""
    select = smoothed_counts(
        model, x, sigma=sigma, n=n0, batch_size=batch_size, generator=generator, runtime=runtime
    )
    estimate = smoothed_counts(
        model,
        x,
        sigma=sigma,
        n=n,
        batch_size=batch_size,
        generator=generator,
        runtime=runtime,
        num_classes=select.shape[1],
    )
    pairs = zip(select, estimate, strict=True)
    return [certify_from_counts(s, e, sigma=sigma, alpha=alpha) for s, e in pairs]


def predict_from_counts(counts: torch.Tensor, alpha: float) -> int:
    """PREDICT (Cohen et al.): the top class if a two-sided binomial test of its votes against the runner-up's
    rejects "equally likely" at level alpha, else ABSTAIN. Wrong with probability <= alpha."""
    top2 = torch.topk(counts, k=min(2, counts.numel()))
    n_a = int(top2.values[0])
    n_b = int(top2.values[1]) if counts.numel() > 1 else 0
    if n_a + n_b == 0:
        return ABSTAIN
    if binomtest(n_a, n_a + n_b, 0.5).pvalue <= alpha:
        return int(top2.indices[0])
    return ABSTAIN
