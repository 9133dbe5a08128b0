"""The joint attack on a patient's decision: PGD over every slice of one scan at once.

A clinician decides per patient, from all of a scan's slices; the adversary of that decision controls
every slice, each within the same eps ball. `joint_pgd` ascends the loss of the *aggregated* prediction,
CE(log(mean_i softmax(f(x_i))), y), not of each slice's own: slices need not each cross their own
boundary, only the mean has to.

Memory stays bounded by `chunk` slices of activations whatever the scan's length: the aggregated loss
depends on slice i only through its probabilities p_i, so per step one no-grad pass (chunk by chunk)
gives every p_i, then each chunk is run forward and backward with the other chunks' probabilities held
constant (in log space: log-probabilities and logsumexp, numerically as stable as cross-entropy). That
is the exact gradient of the aggregated loss with respect to that chunk's slices (a 35-slice 224 px scan
costs the activations of `chunk` slices, plus 3 copies of the scan's pixels).

Decision rules (`rule`, class indices; fortify.evaluation.patients names the classes):
  "mean"     argmax of the mean softmax probability;
  "vote"     the class most slices predict; ties by the mean probability, then by `severity` order
             (the attack itself uses index order there: an exact tie of float means does not occur);
  "max:<k>"  class k if any slice predicts k, else the argmax of the mean probability over the other
             classes (a screening reader: any slice called malignant makes the patient malignant).
"vote" and "max" are not differentiable: the mean-probability loss gives the gradient, and the attack
stops at (and returns) the first iterate whose decision under the stated rule is wrong.

`target=k` makes it targeted: it descends -log(mean_i p_i[k]) and stops once the decision is k. An
untargeted attack only asks whether the decision can change; it may flip a malignant scan to benign when
normal (the mistake that sends a cancer patient home) was also within reach, so evaluation runs the
targeted form too to count that mistake (fortify.evaluation.patient_run).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from fortify.attacks._common import (
    ascent_direction,
    attack_mode,
    check_threat,
    finish,
    logits_f32,
    project,
    uniform_start,
)
from fortify.attacks.spec import PATIENT_RULE as RULE_PATTERN


def check_rule(rule: str) -> str:
    if not isinstance(rule, str) or not RULE_PATTERN.fullmatch(rule):
        raise ValueError(f"unknown patient rule {rule!r}; valid: mean, vote, max:<class index>")
    return rule


def patient_decision(probs: torch.Tensor, rule: str, severity: Sequence[int] | None = None) -> int:
    """One patient's class from its slices' probabilities [S, C] under `rule` (see the module text).
    `severity`: class indices from clinically worst to least, for exact ties (default: index order)."""
    check_rule(rule)
    probs = probs.detach().float().cpu()
    n_classes = probs.shape[1]
    order = list(severity) if severity is not None else list(range(n_classes))
    order += [k for k in range(n_classes) if k not in order]
    mean = probs.mean(0)
    if rule == "mean":
        return int(mean.argmax())
    slice_pred = probs.argmax(1)
    if rule == "vote":
        votes = torch.bincount(slice_pred, minlength=n_classes)
        tied = [k for k in range(n_classes) if votes[k] == votes.max()]
        best = max(float(mean[k]) for k in tied)
        tied = [k for k in tied if float(mean[k]) == best]
        return min(tied, key=order.index)
    k = int(rule.split(":")[1])
    if k >= n_classes:
        raise ValueError(f"rule {rule!r} names class {k} of {n_classes}")
    if bool((slice_pred == k).any()):
        return k
    others = mean.clone()
    others[k] = -math.inf
    return int(others.argmax())


@torch.no_grad()
def _logits(model: torch.nn.Module, x: torch.Tensor, chunk: int) -> torch.Tensor:
    return torch.cat([logits_f32(model, x[i : i + chunk]) for i in range(0, len(x), chunk)])


def joint_gradient(
    model: torch.nn.Module, x_adv: torch.Tensor, y: int, chunk: int
) -> tuple[float, torch.Tensor, torch.Tensor]:
    """(aggregated loss, slice probabilities [S, C], d loss / d x_adv): the exact gradient of
    -log(mean_i p_i[y]) computed chunk by chunk, the other chunks' probabilities held constant.

    In log space (log mean_i p_i[y] = logsumexp_i log_softmax(z_i)[y] - log S), so a confident slice
    keeps its gradient as cross-entropy does; for one slice this is exactly PGD's CE loss."""
    logits = _logits(model, x_adv, chunk)
    log_py = logits.log_softmax(1)[:, y]
    n = len(x_adv)
    grad = torch.empty_like(x_adv)
    for i in range(0, n, chunk):
        others = torch.cat([log_py[:i], log_py[i + chunk :]])  # constant: the rest of the scan
        with torch.enable_grad():
            part = x_adv[i : i + chunk].detach().requires_grad_(True)
            mine = logits_f32(model, part).log_softmax(1)[:, y]
            loss = -(torch.logsumexp(torch.cat([others, mine]), 0) - math.log(n))
            (grad[i : i + chunk],) = torch.autograd.grad(loss, part)
    loss_value = float(-(torch.logsumexp(log_py, 0) - math.log(n)))
    return loss_value, logits.softmax(1), grad


def _label(y: torch.Tensor | int, n: int) -> int:
    """The patient's label from an int, a 0-d tensor or one label per slice (all equal)."""
    if isinstance(y, torch.Tensor):
        values = y.flatten().unique()
        if values.numel() != 1 or (y.dim() == 1 and y.numel() != n):
            raise ValueError("y must be the patient's one label (an int, or the same label for every slice)")
        return int(values[0])
    return int(y)


def joint_pgd(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | int,
    *,
    eps: float,
    norm: str = "linf",
    steps: int = 20,
    alpha: float | None = None,
    rule: str = "mean",
    chunk: int = 16,
    random_start: bool = True,
    generator: torch.Generator | None = None,
    target: int | None = None,
) -> torch.Tensor:
    """PGD on the aggregated prediction of ONE patient: x [S, C, H, W] = all of its slices, y its label.

    Every slice stays in the eps ball around itself (and in [0, 1]). alpha defaults to 2.5*eps/steps.
    Stops at the first iterate that flips the patient's decision under `rule` (also checked before the
    first step) and returns it; otherwise returns the last iterate. `chunk`: slices per forward pass.
    `target`: a class other than y to drive the decision to (stops once it is reached).
    """
    check_threat(norm, eps)
    check_rule(rule)
    if not x.is_floating_point() or x.dim() < 2:
        raise ValueError(f"x must be float slices (S, ...), got {x.dtype} {tuple(x.shape)}")
    if steps < 0 or chunk < 1:
        raise ValueError(f"steps must be >= 0 and chunk >= 1, got steps={steps}, chunk={chunk}")
    label = _label(y, len(x))
    if target is not None and target == label:
        raise ValueError(f"target must be another class than the label {label}")
    goal = label if target is None else int(target)
    sign = 1.0 if target is None else -1.0  # ascend the label's loss, or descend the target's
    alpha = 2.5 * eps / max(steps, 1) if alpha is None else alpha
    with attack_mode(model):
        x0 = x.detach()
        x_adv = uniform_start(x0, norm, eps, generator) if random_start else x0.clone()
        for step in range(steps + 1):
            if step == steps:  # the last iterate still needs one pass to be judged
                probs = _logits(model, x_adv, chunk).softmax(1)
            else:
                _, probs, grad = joint_gradient(model, x_adv, goal, chunk)
            decision = patient_decision(probs, rule)
            if decision != label if target is None else decision == target:
                break
            if step < steps:
                x_adv = project(x_adv + sign * alpha * ascent_direction(grad, norm), x0, norm, eps)
    return finish(x_adv, x)
