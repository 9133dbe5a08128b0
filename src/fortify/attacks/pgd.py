"""Projected gradient descent (Madry et al. 2018), L-inf and L2, with restarts and early stopping."""

from __future__ import annotations

import torch

from fortify.attacks._common import (
    LOSSES,
    ascent_direction,
    attack_loss,
    attack_mode,
    check_input,
    check_threat,
    finish,
    fooled,
    input_grad,
    logits_f32,
    project,
    uniform_start,
)


def pgd(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    steps: int = 10,
    alpha: float | None = None,
    restarts: int = 1,
    random_start: bool = True,
    targeted: bool = False,
    early_stop: bool = False,
    loss: str = "ce",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """PGD in the L-inf or L2 eps-ball, clipped to [0, 1].

    alpha defaults to 2.5*eps/steps (Madry et al.), so the walk can cross the ball. `loss` is
    "ce" (cross-entropy), "cw" (Carlini-Wagner margin max_{j!=y} z_j - z_y, true class masked with
    -inf) or "dlr" (untargeted only; see `_common.dlr_loss`).

    Restarts attack only samples not yet fooled and keep, per sample, the first adversarial
    example found, else the one with the highest final loss.

    `early_stop=True` (for evaluation) drops each sample from the working batch as soon as it is
    fooled and returns that iterate, so fooled samples stop costing forward/backward passes. It
    returns a minimally-pushed adversarial example rather than a max-loss one: use it to measure
    robust accuracy, not to make training examples. Success is judged in the caller's precision. The
    default stays False because training's recipes (fortify.training.recipes) and certify's attack on the
    smoothed classifier call pgd without the argument and need the highest-loss point; evaluation turns
    it on where it cannot weaken the attack (fortify.evaluation.attack_set.for_evaluation).
    """
    check_threat(norm, eps)
    check_input(x, y)
    if steps < 1 or restarts < 1:
        raise ValueError(f"steps and restarts must be >= 1, got steps={steps}, restarts={restarts}")
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; valid: {', '.join(LOSSES)}")
    if alpha is None:
        alpha = 2.5 * eps / steps
    run = dict(
        norm=norm,
        eps=eps,
        steps=steps,
        alpha=alpha,
        random_start=random_start,
        targeted=targeted,
        loss=loss,
        generator=generator,
    )
    with attack_mode(model):
        x0 = x.detach()
        if restarts == 1 and not early_stop:
            return finish(_walk(model, x0, y, **run), x)  # training path: no extra evaluation pass
        best = x0.clone()
        best_loss = torch.full((x.shape[0],), float("-inf"), device=x.device)
        done = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for _ in range(restarts):
            idx = (~done).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            if early_stop:
                adv, adv_loss, adv_fooled = _walk_early_stop(model, x0[idx], y[idx], **run)
            else:
                adv = _walk(model, x0[idx], y[idx], **run)
                with torch.no_grad():
                    logits = logits_f32(model, adv)
                adv_loss = attack_loss(logits, y[idx], loss, targeted)
                adv_fooled = fooled(logits, y[idx], targeted)
            take = adv_fooled | (adv_loss > best_loss[idx])
            best[idx[take]] = adv[take]
            best_loss[idx[take]] = adv_loss[take]
            done[idx[adv_fooled]] = True
    return finish(best, x)


def _walk(model, x, y, *, norm, eps, steps, alpha, random_start, targeted, loss, generator) -> torch.Tensor:
    """Plain PGD: `steps` ascent steps on every sample."""
    x_adv = _start(x, norm, eps, random_start, generator)
    for _ in range(steps):
        _, _, grad = input_grad(model, x_adv, y, loss, targeted)
        x_adv = project(x_adv + alpha * ascent_direction(grad, norm), x, norm, eps)
    return x_adv


def _walk_early_stop(model, x, y, *, norm, eps, steps, alpha, random_start, targeted, loss, generator):
    """PGD that retires each sample at its first fooled iterate. Returns (x_adv, loss, fooled)."""
    n = x.shape[0]
    out = x.clone()
    out_loss = torch.full((n,), float("-inf"), device=x.device)
    out_fooled = torch.zeros(n, dtype=torch.bool, device=x.device)
    active = torch.arange(n, device=x.device)
    x_act, y_act = x, y
    x_adv = _start(x, norm, eps, random_start, generator)
    for step in range(steps + 1):
        if step < steps:
            cur_loss, logits, grad = input_grad(model, x_adv, y_act, loss, targeted)
        else:  # the last iterate still needs one forward pass to be judged
            with torch.no_grad():
                logits = logits_f32(model, x_adv)
            cur_loss = attack_loss(logits, y_act, loss, targeted)
        hit = fooled(logits, y_act, targeted)
        if step == steps:
            out[active], out_loss[active], out_fooled[active] = x_adv, cur_loss, hit
            break
        if hit.any():
            out[active[hit]] = x_adv[hit]
            out_loss[active[hit]] = cur_loss[hit]
            out_fooled[active[hit]] = True
            keep = ~hit
            if not keep.any():
                break
            active, x_act, y_act = active[keep], x_act[keep], y_act[keep]
            x_adv, grad = x_adv[keep], grad[keep]
        x_adv = project(x_adv + alpha * ascent_direction(grad, norm), x_act, norm, eps)
    return out, out_loss, out_fooled


def _start(x, norm, eps, use_random, generator) -> torch.Tensor:
    return uniform_start(x, norm, eps, generator) if use_random else x.clone()
