"""Square Attack (Andriushchenko et al. 2020): score-based random search, L-inf and L2.

Gradient-free: it only queries logits (one forward pass per iteration, under no_grad), so it is
blind to gradient masking. That is why AutoAttack runs it last: if it fools images that every
gradient attack missed, the gradients were misleading them.

Each iteration changes one random square window of the current best perturbation and keeps the
change if the margin z_y - max_{j!=y} z_j fell (or the image became misclassified). The window
covers a fraction p of the image, halved at fixed points of the query budget (see `p_schedule`).

- L-inf: start from vertical stripes of +-eps (one sign per column and channel); a window is set
  to +-eps, one random sign per channel, so the perturbation stays on the vertices of the ball.
- L2: start from a grid of tiles each holding the `_eta` pattern (mass concentrated in the centre,
  opposite signs in the two halves), scaled to norm eps. An update moves the energy of a second
  random window into the first (which gets a fresh `_eta` pattern plus its old content, rescaled
  so the total norm is unchanged), then rescales the whole perturbation back onto the eps-sphere.
"""

from __future__ import annotations

import bisect
import functools
import math

import torch

from fortify.attacks._common import (
    TINY,
    _noise,
    attack_mode,
    check_input,
    check_threat,
    finish,
    flat_norm,
    fooled,
    logits_f32,
    margin,
    project,
)

# The paper halves p after these many queries out of 10,000; AutoAttack rescales them to the
# actual budget (query i counts as i * 10000 / queries), which we do too.
P_BREAKPOINTS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
PAPER_BUDGET = 10_000


def square(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    queries: int = 5000,
    p_init: float = 0.8,
    restarts: int = 1,
    early_stop: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Untargeted Square Attack on (N, C, H, W) images in [0, 1], margin loss on the logits.

    `queries` is the budget of forward passes per sample and per restart (the initial point
    counts as one). Samples misclassified on the clean input are returned unchanged. With
    `early_stop` (the default, for evaluation) a sample leaves the working batch at its first
    success, so the cost falls as the attack succeeds; without it every sample spends its whole
    budget driving its margin lower. Restarts attack only samples not yet fooled. Per sample the
    first success is returned, else the lowest-margin point found.
    """
    check_threat(norm, eps)
    check_input(x, y)
    if x.dim() != 4:
        raise ValueError(f"square needs (N, C, H, W) images, got shape {tuple(x.shape)}")
    if queries < 1 or restarts < 1:
        raise ValueError(f"square needs queries >= 1 and restarts >= 1, got {queries} and {restarts}")
    if not 0 < p_init <= 1:
        raise ValueError(f"p_init must be in (0, 1], got {p_init}")
    with attack_mode(model), torch.no_grad():
        x0 = x.detach()
        done = logits_f32(model, x0).argmax(1) != y
        out = x0.clone()
        best_margin = torch.full((x.shape[0],), float("inf"), device=x.device)
        for _ in range(restarts):
            idx = (~done).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            adv, adv_margin, adv_hit = _run(
                model,
                x0[idx],
                y[idx],
                eps=eps,
                norm=norm,
                queries=queries,
                p_init=p_init,
                early_stop=early_stop,
                generator=generator,
            )
            take = adv_hit | (adv_margin < best_margin[idx])
            out[idx[take]] = adv[take]
            best_margin[idx[take]] = adv_margin[take]
            done[idx[adv_hit]] = True
    return finish(out, x)


def p_schedule(it: int, queries: int, p_init: float) -> float:
    """Fraction of the image a window covers at iteration `it` of a `queries` budget.

    p_init up to (rescaled) query 10, then halved after each breakpoint: p_init/512 at the end.
    """
    rescaled = int(it / queries * PAPER_BUDGET)
    return p_init / 2 ** bisect.bisect_left(P_BREAKPOINTS, rescaled)


def _side(p: float, h: int, w: int, norm: str) -> int:
    """Window side for fraction p: at least 1 px (L-inf) or 3 px and odd (L2, so `_eta` has a centre)."""
    s = int(round(math.sqrt(p * h * w)))
    if norm == "l2":
        s = max(s, 3)
        s += 1 - s % 2
    return max(1, min(s, h, w))


def _run(model, x, y, *, eps, norm, queries, p_init, early_stop, generator):
    """One restart on samples all correctly classified. Returns (x_best, margin, fooled) per sample."""
    n, c, h, w = x.shape
    x_best = _init(x, eps, norm, generator)
    logits = logits_f32(model, x_best)
    m_best, hit = margin(logits, y), fooled(logits, y, False)
    for it in range(queries - 1):  # the initial point used one query
        active = (~hit).nonzero().squeeze(1) if early_stop else torch.arange(n, device=x.device)
        if active.numel() == 0:
            break
        xa, xb = x[active], x_best[active]
        s = _side(p_schedule(it, queries, p_init), h, w, norm)
        step = _linf_step if norm == "linf" else _l2_step
        x_new = step(xa, xb, eps, s, generator)
        logits = logits_f32(model, x_new)
        m_new, hit_new = margin(logits, y[active]), fooled(logits, y[active], False)
        # Keep a lower margin; a first success is kept even at an equal margin (a logit tie).
        take = (m_new < m_best[active]) | (hit_new & ~hit[active])
        x_best[active[take]] = x_new[take]
        m_best[active[take]] = m_new[take]
        hit[active[hit_new]] = True
    return x_best, m_best, hit


def _init(x: torch.Tensor, eps: float, norm: str, generator) -> torch.Tensor:
    n, c, h, w = x.shape
    if norm == "linf":
        # Vertical stripes: one random sign per column and channel (the paper's L-inf init).
        return project(x + eps * _signs((n, c, 1, w), generator, x), x, norm, eps)
    # A grid of (about) 5 x 5 tiles, each an `_eta` pattern with a random sign per channel.
    t = max(min(h, w) // 5, 1)
    delta = torch.zeros_like(x)
    top0, left0 = max((h - 5 * t) // 2, 0), max((w - 5 * t) // 2, 0)
    for top in range(top0, h - t + 1, t):
        for left in range(left0, w - t + 1, t):
            pattern = _eta_batch(n, t, generator, x)[:, None]
            delta[:, :, top : top + t, left : left + t] = pattern * _signs((n, c, 1, 1), generator, x)
    return project(x + _to_sphere(delta, eps), x, norm, eps)


def _linf_step(x, x_best, eps, s, generator):
    """Set one random s x s window per sample to +-eps (one sign per channel)."""
    n, c = x.shape[:2]
    delta = x_best - x
    win = _window(x, s, generator)
    delta[win] = (eps * _signs((n, c, 1, 1), generator, x)).expand(n, c, s, s)
    return project(x + delta, x, "linf", eps)


def _l2_step(x, x_best, eps, s, generator):
    """The paper's L2 update: move window 2's energy (and any unused budget) into window 1."""
    n, c = x.shape[:2]
    delta = x_best - x
    win1, win2 = _window(x, s, generator), _window(x, s, generator)
    old1 = delta[win1]  # (n, c, s, s)
    union = torch.zeros_like(delta)
    union[win1] = 1.0
    union[win2] = 1.0
    # Per channel: energy in the two windows, which the new window 1 takes over, plus an equal
    # share of whatever the clipping to [0, 1] left unused of eps^2.
    energy = (delta * union).flatten(2).pow(2).sum(2)
    spare = (eps**2 - flat_norm(delta).pow(2)).clamp(min=0)[:, None] / c
    target = (energy + spare).sqrt()[..., None, None]
    fresh = _eta_batch(n, s, generator, x)[:, None] * _signs((n, c, 1, 1), generator, x)
    new1 = fresh + old1 / (old1.flatten(2).norm(dim=2)[..., None, None] + TINY)
    new1 = new1 / (new1.flatten(2).norm(dim=2)[..., None, None] + TINY) * target
    delta[win2] = 0.0
    delta[win1] = new1
    # Back onto the eps-sphere: the clipping of the previous step only ever shortens delta.
    return project(x + _to_sphere(delta, eps), x, "l2", eps)


def _to_sphere(delta: torch.Tensor, eps: float) -> torch.Tensor:
    return delta / (flat_norm(delta) + TINY).view(-1, 1, 1, 1) * eps


def _window(x: torch.Tensor, s: int, generator) -> tuple[torch.Tensor, ...]:
    """Advanced-index tuple selecting a random s x s window (all channels) in each sample."""
    n, c, h, w = x.shape
    device = generator.device if generator is not None else x.device
    top = torch.randint(0, h - s + 1, (n,), generator=generator, device=device).to(x.device)
    left = torch.randint(0, w - s + 1, (n,), generator=generator, device=device).to(x.device)
    ar = torch.arange(s, device=x.device)
    rows = (top[:, None] + ar)[:, None, :, None]
    cols = (left[:, None] + ar)[:, None, None, :]
    return (
        torch.arange(n, device=x.device)[:, None, None, None],
        torch.arange(c, device=x.device)[None, :, None, None],
        rows,
        cols,
    )


def _signs(shape, generator, like: torch.Tensor) -> torch.Tensor:
    """Uniform random +-1 (sign(2u - 1) could be 0)."""
    return torch.where(_noise(torch.rand, shape, generator, like) < 0.5, -1.0, 1.0).to(like.dtype)


def _eta_batch(n: int, s: int, generator, like: torch.Tensor) -> torch.Tensor:
    """(n, s, s) copies of `_eta(s)`, each transposed with probability 1/2."""
    eta = _eta(s).to(like.device, like.dtype)
    flip = _noise(torch.rand, (n,), generator, like) < 0.5
    return torch.where(flip[:, None, None], eta.T, eta)


@functools.cache
def _eta(s: int) -> torch.Tensor:
    """The paper's L2 window pattern: +rectangles in the top half, - in the bottom, unit L2 norm."""
    top = _rectangles(s // 2, s)
    eta = torch.cat([top, -_rectangles(s - s // 2, s)])
    return eta / eta.norm()


def _rectangles(a: int, b: int) -> torch.Tensor:
    """Nested rectangles around the centre of an a x b block, ring k weighted 1/(k+1)^2, unit norm."""
    delta = torch.zeros(a, b, dtype=torch.float64)
    ca, cb = a // 2, b // 2
    for k in range(max(ca, cb) + 1):
        delta[max(ca - k, 0) : min(ca + k + 1, a), max(cb - k, 0) : min(cb + k + 1, b)] += 1.0 / (k + 1) ** 2
    return delta / (delta.norm() + TINY)
