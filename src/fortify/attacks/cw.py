"""Carlini & Wagner L2 attack (2017), batched, with a per-sample binary search over c.

Variable: x_adv = (tanh(w0 + delta) + 1) / 2 with w0 = atanh((2x - 1) * 0.999999). The shrink keeps
atanh finite, so pixels at exactly 0 or 1 (CT slices are full of them) start at a finite w and can
move; Adam's per-coordinate scaling makes their tiny tanh gradient irrelevant. They still start
where tanh is flat (w ~ +-7.25), so with lr=0.01 and 100 steps they move only ~1e-6; they take
part in the attack with larger lr or more steps (lr=0.1, 200 steps: ~0.03). That is a property
of Carlini's parametrization, kept as specified.
Loss per sample: ||x_adv - x||^2 + c * max(z_y - max_{j!=y} z_j, -kappa), the true class masked by
-inf (multiplying by a one-hot, as torchattacks does, picks 0 over negative logits: their bug #184).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fortify.attacks._common import attack_mode, check_input, finish, fooled, logits_f32, margin

SHRINK = 0.999999
NO_UPPER = 1e10  # "no successful c yet" marker for the binary search (Carlini's value)
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
MIN_ABORT_CHECK = 10


@dataclass
class CWResult:
    x_adv: torch.Tensor  # per sample the smallest-L2 success, or the input where it failed
    success: torch.Tensor  # bool (N,)
    l2: torch.Tensor  # float (N,), inf where failed


def cw_l2(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    c: float = 0.1,
    kappa: float = 0.0,
    steps: int = 100,
    binary_steps: int = 5,
    lr: float = 0.01,
    max_l2: float | None = None,
    targeted: bool = False,
    abort_early: bool = True,
) -> torch.Tensor:
    """CW-L2 adversarial examples; see `cw_l2_detailed` for parameters and per-sample results."""
    return cw_l2_detailed(
        model,
        x,
        y,
        c=c,
        kappa=kappa,
        steps=steps,
        binary_steps=binary_steps,
        lr=lr,
        max_l2=max_l2,
        targeted=targeted,
        abort_early=abort_early,
    ).x_adv


def _success(logits: torch.Tensor, y: torch.Tensor, kappa: float, targeted: bool) -> torch.Tensor:
    """Goal reached with confidence kappa: misclassified (or the target) by a margin of at least kappa."""
    m = margin(logits, y)
    return fooled(logits, y, targeted) & ((m if targeted else -m) >= kappa)


def _hinge(logits: torch.Tensor, y: torch.Tensor, kappa: float, targeted: bool) -> torch.Tensor:
    m = margin(logits, y)
    return (-m if targeted else m).clamp(min=-kappa)


def cw_l2_detailed(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    c: float = 0.1,
    kappa: float = 0.0,
    steps: int = 100,
    binary_steps: int = 5,
    lr: float = 0.01,
    max_l2: float | None = None,
    targeted: bool = False,
    abort_early: bool = True,
) -> CWResult:
    """Minimum-L2 adversarial examples with per-sample success flags and L2 distances.

    c is the initial trade-off constant; each sample's c is multiplied by 10 until its first
    success, then bisected (`binary_steps` rounds of `steps` Adam iterations at rate `lr`). Each round
    after the first starts from the sample's smallest adversarial example so far (a warm start).
    `abort_early` retires a sample from a round once its loss stops improving (checked every
    steps//10 iterations). Samples that already meet the goal on the clean input are successes
    with L2 = 0 and are not attacked. With `max_l2`, a sample counts as a success only if its
    smallest L2 is <= max_l2; otherwise it is returned unchanged with success False ("robust").
    Every success is confirmed by one forward pass on the returned batch (one that is not, which
    only batch-size-dependent rounding at the decision boundary can cause, is reported as a
    failure with the input returned), so `success` matches a re-score of `x_adv` in the caller's
    precision.
    """
    check_input(x, y)
    if steps < 1 or binary_steps < 1 or not c > 0 or not lr > 0 or kappa < 0:
        raise ValueError("cw_l2 needs steps, binary_steps >= 1, c > 0, lr > 0, kappa >= 0")
    n = x.shape[0]
    with attack_mode(model):
        x0 = x.detach()
        best_adv = x0.clone()
        best_l2 = torch.full((n,), float("inf"), device=x.device)
        with torch.no_grad():
            clean_ok = _success(logits_f32(model, x0), y, kappa, targeted)
        best_l2[clean_ok] = 0.0
        todo = (~clean_ok).nonzero().squeeze(1)
        if todo.numel():
            _search_c(
                model,
                x0,
                y,
                todo,
                best_adv,
                best_l2,
                c=c,
                kappa=kappa,
                steps=steps,
                binary_steps=binary_steps,
                lr=lr,
                targeted=targeted,
                abort_early=abort_early,
            )
        success = torch.isfinite(best_l2)
        if max_l2 is not None:
            success &= best_l2 <= max_l2
        x_adv, success = _confirmed(model, x, y, best_adv, success, kappa=kappa, targeted=targeted)
        l2 = torch.where(success, best_l2, torch.full_like(best_l2, float("inf")))
    return CWResult(x_adv, success, l2)


def _search_c(
    model, x0, y, todo, best_adv, best_l2, *, c, kappa, steps, binary_steps, lr, targeted, abort_early
) -> None:
    """The binary search over c for samples `todo`; updates best_adv/best_l2 in place."""
    w0 = torch.atanh((2 * x0[todo].float() - 1) * SHRINK)
    const = torch.full((todo.numel(),), float(c), device=x0.device)
    lower = torch.zeros_like(const)
    upper = torch.full_like(const, NO_UPPER)
    start = torch.zeros_like(w0)
    for _ in range(binary_steps):
        won = _optimize(
            model,
            x0,
            y,
            todo,
            w0,
            start,
            const,
            best_adv,
            best_l2,
            kappa=kappa,
            steps=steps,
            lr=lr,
            targeted=targeted,
            abort_early=abort_early,
        )
        # Warm start: the next round (a smaller c for samples that succeeded) begins at the
        # smallest adversarial example found so far, not at the clean image, so its budget is
        # spent shrinking the perturbation instead of finding the boundary again.
        found = torch.isfinite(best_l2[todo])
        best_w = torch.atanh((2 * best_adv[todo].float().clamp(0, 1) - 1) * SHRINK)
        found = found.view(-1, *([1] * (w0.dim() - 1)))
        start = torch.where(found, best_w - w0, torch.zeros_like(w0))
        upper = torch.where(won, torch.minimum(upper, const), upper)
        lower = torch.where(won, lower, torch.maximum(lower, const))
        const = torch.where(upper < NO_UPPER / 10, (lower + upper) / 2, const * 10)


def _confirmed(model, x, y, best_adv, success, *, kappa, targeted) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_adv, success): each success's best point, else the input, with `success` re-judged on x_adv."""
    x0 = x.detach()
    n = x0.shape[0]
    keep = success[:, None].expand(n, x0[0].numel()).reshape(x0.shape)
    x_adv = finish(torch.where(keep, best_adv, x0).clamp(0, 1), x)
    # Each success was judged on the very iterate stored, but inside a shrinking sub-batch; a
    # kappa=0 success sits on the decision boundary, where a batch-size-dependent rounding can
    # flip it. Confirm on exactly the batch we return, so `success` agrees with any re-score.
    with torch.no_grad():
        confirmed = _success(logits_f32(model, x_adv), y, kappa, targeted)
    lost = success & ~confirmed
    if lost.any():
        success = success & confirmed
        x_adv[lost] = x0[lost].to(x_adv.dtype)
    return x_adv, success


def _optimize(
    model, x0, y, todo, w0, start, const, best_adv, best_l2, *, kappa, steps, lr, targeted, abort_early
):
    """One binary-search round for samples `todo`; updates best_adv/best_l2 in place.

    Returns a bool per entry of `todo`: whether the goal was reached in this round (with this c).
    """
    won = torch.zeros(todo.numel(), dtype=torch.bool, device=x0.device)
    active = torch.arange(todo.numel(), device=x0.device)
    w0_a, x_a, y_a, c_a = w0, x0[todo].float(), y[todo], const
    delta = start.clone()
    m1, m2 = torch.zeros_like(w0), torch.zeros_like(w0)
    prev = torch.full((todo.numel(),), float("inf"), device=x0.device)
    # Carlini's code checks every steps//10 of 10,000 iterations; with the few steps a CPU affords, a
    # check every 2-3 Adam steps retires samples that were still shrinking: never check more often
    # than every MIN_ABORT_CHECK steps.
    check_every = max(steps // 10, MIN_ABORT_CHECK)
    b1, b2 = ADAM_BETAS
    for it in range(steps):
        delta.requires_grad_(True)
        x_adv = (torch.tanh(w0_a + delta) + 1) / 2
        logits = logits_f32(model, x_adv.to(x0.dtype))
        dist = (x_adv - x_a).flatten(1).pow(2).sum(1)
        loss = dist + c_a * _hinge(logits, y_a, kappa, targeted)
        (grad,) = torch.autograd.grad(loss.sum(), delta)
        delta = delta.detach()
        with torch.no_grad():
            # Record successes at the point just evaluated (before this step moves it).
            ok = _success(logits, y_a, kappa, targeted)
            won[active[ok]] = True
            l2 = dist.sqrt()
            better = ok & (l2 < best_l2[todo[active]])
            if better.any():
                gidx = todo[active[better]]
                best_l2[gidx] = l2[better]
                best_adv[gidx] = x_adv[better].detach().to(best_adv.dtype)
            # Adam (hand-written so its state can be subset when samples retire early).
            t = it + 1
            m1.mul_(b1).add_(grad, alpha=1 - b1)
            m2.mul_(b2).addcmul_(grad, grad, value=1 - b2)
            step = (m1 / (1 - b1**t)) / ((m2 / (1 - b2**t)).sqrt() + ADAM_EPS)
            delta = delta - lr * step
            if abort_early and t % check_every == 0:
                loss = loss.detach()
                stalled = loss > prev - 1e-4 * prev.abs()
                prev = loss
                if stalled.any():
                    keep = ~stalled
                    if not keep.any():
                        break
                    active, w0_a, x_a, y_a, c_a = active[keep], w0_a[keep], x_a[keep], y_a[keep], c_a[keep]
                    delta, m1, m2, prev = delta[keep], m1[keep], m2[keep], prev[keep]
    return won
