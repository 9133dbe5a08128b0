"""Auto-PGD (Croce & Hein 2020): step-size-free PGD with momentum, CE and 3-class-safe DLR losses.

Schedule as in the paper / AutoAttack: initial step 2*eps, momentum 0.75, checkpoints after
22% of the iterations and then at shrinking intervals (-3% per check, at least 6%). At a
checkpoint a sample's step is halved, and it restarts from its best point, when its loss rose in
at most rho=75% of the steps since the last check, or when the step was not reduced last time and
the best loss has not improved since.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fortify.attacks._common import (
    ascent_direction,
    attack_mode,
    check_input,
    check_threat,
    dlr_loss,
    dlr_targeted_loss,
    finish,
    logits_f32,
    project,
    uniform_start,
)

APGD_LOSSES = ("ce", "dlr")
MOMENTUM = 0.75


def apgd(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    steps: int = 100,
    loss: str = "ce",
    restarts: int = 1,
    targeted: bool = False,
    n_target_classes: int = 0,
    rho: float = 0.75,
    early_stop: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """APGD with CE or DLR loss, in the L-inf or L2 eps-ball.

    Modes:
    - untargeted (default): y are the true labels; success = misclassified.
    - `targeted=True`: y are target classes; success = classified as the target. Targeted DLR
      measures the margin against the clean prediction.
    - `n_target_classes=k` (untargeted evaluation, AutoAttack's APGD-T): y are the true labels; for
      each of the k highest-scoring wrong classes on the clean input (k capped at num_classes-1),
      run targeted APGD towards it; success = misclassified.

    The DLR loss is the 3-class-safe variant documented in `_common.dlr_loss` /
    `_common.dlr_targeted_loss`. Samples already successful on the clean input are returned
    unchanged. With `early_stop` each sample leaves the batch at its first success. Restarts (and
    targets) only attack samples not yet successful; per sample the first success is returned,
    else the highest-loss point.
    """
    check_threat(norm, eps)
    check_input(x, y)
    _check_args(loss, steps, restarts, targeted, n_target_classes)
    with attack_mode(model):
        x0 = x.detach()
        with torch.no_grad():
            clean = logits_f32(model, x0)
        if loss == "dlr" and clean.shape[1] < 3:
            raise ValueError("the DLR loss needs at least 3 classes")
        y_ref, reach, done, targets_list = _goals(clean, y, targeted, n_target_classes)
        out = x0.clone()
        best_loss = torch.full((x.shape[0],), float("-inf"), device=x.device)
        for target in targets_list:
            for _ in range(restarts):
                idx = (~done).nonzero().squeeze(1)
                if idx.numel() == 0:
                    break
                adv, adv_hit, adv_loss = _run(
                    model,
                    x0[idx],
                    y_ref[idx],
                    None if target is None else target[idx],
                    reach=reach,
                    loss=loss,
                    eps=eps,
                    norm=norm,
                    steps=steps,
                    rho=rho,
                    early_stop=early_stop,
                    generator=generator,
                )
                # Losses of different targets are not comparable; keep the first target's best point.
                take = adv_hit | (adv_loss > best_loss[idx])
                out[idx[take]] = adv[take]
                best_loss[idx[take]] = adv_loss[take]
                done[idx[adv_hit]] = True
            best_loss.fill_(float("inf"))
    return finish(out, x)


def _check_args(loss: str, steps: int, restarts: int, targeted: bool, n_target_classes: int) -> None:
    if loss not in APGD_LOSSES:
        raise ValueError(f"unknown APGD loss {loss!r}; valid: {', '.join(APGD_LOSSES)}")
    if steps < 1 or restarts < 1 or n_target_classes < 0:
        raise ValueError("apgd needs steps >= 1, restarts >= 1, n_target_classes >= 0")
    if targeted and n_target_classes:
        raise ValueError("use either targeted=True (y are targets) or n_target_classes (y are labels)")


def _goals(clean: torch.Tensor, y: torch.Tensor, targeted: bool, n_target_classes: int):
    """(y_ref, reach, done, targets_list) from the clean logits: the labels the loss refers to, whether
    success means reaching the target, the samples already successful, and the targets to run (None:
    untargeted)."""
    if targeted:
        y_ref, reach = clean.argmax(1), True
        done = clean.argmax(1) == y
        targets_list = [y]
    else:
        y_ref, reach = y, False
        done = clean.argmax(1) != y
        if n_target_classes:
            k = min(n_target_classes, clean.shape[1] - 1)
            ranked = clean.scatter(1, y[:, None], float("-inf")).argsort(dim=1, descending=True)
            targets_list = [ranked[:, r] for r in range(k)]
        else:
            targets_list = [None]
    return y_ref, reach, done, targets_list


def _loss(logits, y_ref, target, loss: str) -> torch.Tensor:
    if target is None:
        return F.cross_entropy(logits, y_ref, reduction="none") if loss == "ce" else dlr_loss(logits, y_ref)
    if loss == "ce":
        return -F.cross_entropy(logits, target, reduction="none")
    return dlr_targeted_loss(logits, y_ref, target)


def _eval(model, x_adv, y_ref, target, loss, need_grad: bool):
    """(loss, success-ready logits, grad or None) at x_adv."""
    if not need_grad:
        with torch.no_grad():
            logits = logits_f32(model, x_adv)
            return _loss(logits, y_ref, target, loss), logits, None
    x_adv = x_adv.detach().requires_grad_(True)
    logits = logits_f32(model, x_adv)
    per_sample = _loss(logits, y_ref, target, loss)
    (grad,) = torch.autograd.grad(per_sample.sum(), x_adv)
    return per_sample.detach(), logits.detach(), grad


def _checkpoints(steps: int) -> set[int]:
    """Iteration counts after which the step size is reviewed (Croce & Hein 2020, Sec. 3.2)."""
    first, shrink, minimum = max(int(0.22 * steps), 1), max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    points, at, k = set(), 0, first
    while at + k <= steps:
        at += k
        points.add(at)
        k = max(k - shrink, minimum)
    return points


def _bc(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def _run(model, x, y_ref, target, *, reach, loss, eps, norm, steps, rho, early_stop, generator):
    """One APGD run. Returns (x_out, success, loss at x_out) for every input sample."""
    n = x.shape[0]
    out = x.clone()
    out_hit = torch.zeros(n, dtype=torch.bool, device=x.device)
    out_loss = torch.full((n,), float("-inf"), device=x.device)
    checkpoints = _checkpoints(steps)

    x_adv = uniform_start(x, norm, eps, generator)
    cur_loss, logits, grad = _eval(model, x_adv, y_ref, target, loss, need_grad=True)
    # x_eval is the iterate the current `logits`/`cur_loss` belong to: the one judged and stored.
    # x_adv is where the next step starts; a checkpoint may reset it to x_best, so it must not be
    # what a success stores (the old code did, and could return a correctly classified x_best).
    s = {  # per-sample state of the samples still being attacked
        "idx": torch.arange(n, device=x.device),
        "x": x,
        "y": y_ref,
        "x_adv": x_adv,
        "x_old": x_adv,
        "x_eval": x_adv,
        "grad": grad,
        "step": torch.full((n,), 2.0 * eps, device=x.device),
        "x_best": x_adv,
        "loss_best": cur_loss,
        "grad_best": grad,
        "prev_loss": cur_loss,
        "increases": torch.zeros(n, device=x.device),
        "reduced_last": torch.ones(n, dtype=torch.bool, device=x.device),
        "loss_best_last": cur_loss,
    }
    if target is not None:
        s["t"] = target
    last_check = 0
    for it in range(steps + 1):
        hit = (logits.argmax(1) == s["t"]) if reach else (logits.argmax(1) != s["y"])
        new = hit & ~out_hit[s["idx"]]
        if new.any():
            out[s["idx"][new]] = s["x_eval"][new]
            out_loss[s["idx"][new]] = cur_loss[new]
            out_hit[s["idx"][new]] = True
        if it == steps:
            break
        if early_stop and hit.any():
            keep = ~hit
            if not keep.any():
                break
            s = {k: v[keep] for k, v in s.items()}
        a = MOMENTUM if it > 0 else 1.0
        xa, xn = s["x_adv"], s["x"]
        z = project(xa + _bc(s["step"], xa) * ascent_direction(s["grad"], norm), xn, norm, eps)
        x_new = project(xa + a * (z - xa) + (1 - a) * (xa - s["x_old"]), xn, norm, eps)
        s["x_old"], s["x_adv"], s["x_eval"] = xa, x_new, x_new
        cur_loss, logits, grad = _eval(model, x_new, s["y"], s.get("t"), loss, need_grad=it + 1 < steps)
        if grad is not None:
            s["grad"] = grad
        s["increases"] = s["increases"] + (cur_loss > s["prev_loss"]).float()
        s["prev_loss"] = cur_loss
        better = cur_loss > s["loss_best"]
        s["loss_best"] = torch.where(better, cur_loss, s["loss_best"])
        s["x_best"] = torch.where(_bc(better, x_new), x_new, s["x_best"])
        if grad is not None:
            s["grad_best"] = torch.where(_bc(better, grad), grad, s["grad_best"])
        if it + 1 in checkpoints:
            window = it + 1 - last_check
            last_check = it + 1
            oscillating = s["increases"] <= window * rho
            stuck = ~s["reduced_last"] & (s["loss_best_last"] >= s["loss_best"])
            reduce = oscillating | stuck
            s["reduced_last"], s["loss_best_last"] = reduce, s["loss_best"].clone()
            s["increases"] = torch.zeros_like(s["increases"])
            s["step"] = torch.where(reduce, s["step"] / 2, s["step"])
            s["x_adv"] = torch.where(_bc(reduce, x_new), s["x_best"], x_new)
            s["grad"] = torch.where(_bc(reduce, x_new), s["grad_best"], s["grad"])
    # Samples never fooled: return their highest-loss point.
    miss = ~out_hit[s["idx"]]
    out[s["idx"][miss]] = s["x_best"][miss]
    out_loss[s["idx"][miss]] = s["loss_best"][miss]
    return out, out_hit, out_loss
