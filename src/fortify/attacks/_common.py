"""Helpers shared by every attack: model state guard, losses, projections, random starts.

All attacks work on float tensors in [0, 1]. They never enter autocast themselves (the caller
decides precision with `runtime.autocast()`), and always cast logits to float32 before a loss so
that bf16 forward passes do not make the loss or the success test coarse.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

NORMS = ("linf", "l2")
# Guards divisions by a norm or a logit gap; small enough not to change any real value.
TINY = 1e-12


@contextlib.contextmanager
def attack_mode(model: torch.nn.Module) -> Iterator[None]:
    """Run the model in eval mode with parameter gradients off; restore both afterwards.

    Turning `requires_grad` off means autograd neither computes nor stores parameter gradients,
    so a training loop's `.grad` buffers stay exactly as they were (and backward is cheaper).
    """
    was_training = model.training
    params = list(model.parameters())
    saved = [p.requires_grad for p in params]
    model.eval()
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, saved, strict=True):
            p.requires_grad_(flag)
        model.train(was_training)


def check_threat(norm: str, eps: float) -> None:
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")
    if not eps >= 0:  # also rejects NaN
        raise ValueError(f"eps must be >= 0, got {eps}")


def check_input(x: torch.Tensor, y: torch.Tensor) -> None:
    if not x.is_floating_point():
        raise TypeError(f"attacks take float images in [0, 1], got dtype {x.dtype}")
    if x.dim() < 2 or y.shape != x.shape[:1]:
        raise ValueError(f"x must be (N, ...) and y (N,); got {tuple(x.shape)} and {tuple(y.shape)}")


def logits_f32(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x).float()


def finish(x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Detach and return in x's dtype and memory layout (channels_last stays channels_last)."""
    out = x_adv.detach().to(dtype=x.dtype)
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        out = out.contiguous(memory_format=torch.channels_last)
    return out


def flat_norm(t: torch.Tensor) -> torch.Tensor:
    """Per-sample L2 norm, shape (N,)."""
    return t.flatten(1).norm(dim=1)


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def project(x_adv: torch.Tensor, x: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """Project into the eps-ball around x, then clip to [0, 1].

    For L-inf both sets are boxes, so clip-after-project is the exact projection onto their
    intersection. For L2 clipping after projection can only shrink the perturbation, so the
    result stays inside the ball.
    """
    delta = x_adv - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        n = flat_norm(delta)
        factor = torch.where(n > eps, eps / (n + TINY), torch.ones_like(n))
        delta = delta * _bcast(factor, delta)
    return (x + delta).clamp(0.0, 1.0)


def _noise(fn, shape, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """Random tensor from `fn` (torch.rand/randn) on the generator's device, moved to like's device."""
    device = generator.device if generator is not None else like.device
    return fn(shape, generator=generator, device=device).to(like.device, like.dtype)


def uniform_start(x: torch.Tensor, norm: str, eps: float, generator: torch.Generator | None) -> torch.Tensor:
    """Uniform point in the L-inf box; for L2 a random direction with radius uniform in [0, eps].

    A point uniform in a high-dimensional L2 ball lies almost surely on its surface, which wastes
    the budget: on our tests PGD-L2 started there ended ~1.5 pt weaker than from this start.
    """
    if norm == "linf":
        delta = (_noise(torch.rand, x.shape, generator, x) * 2 - 1) * eps
    else:
        gauss = _noise(torch.randn, x.shape, generator, x)
        radius = eps * _noise(torch.rand, (x.shape[0],), generator, x)
        delta = gauss / _bcast(flat_norm(gauss) + TINY, gauss) * _bcast(radius, gauss)
    return project(x + delta, x, norm, eps)


def ascent_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """Steepest-ascent unit step for the norm: sign for L-inf, normalized gradient for L2."""
    if norm == "linf":
        return grad.sign()
    return grad / _bcast(flat_norm(grad) + TINY, grad)


def other_max(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """max_{j != y} z_j with class y masked by -inf (a one-hot multiply is wrong for negative logits)."""
    masked = logits.scatter(1, y[:, None], float("-inf"))
    return masked.amax(dim=1)


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z_y - max_{j != y} z_j: positive while the sample is classified as y."""
    return logits.gather(1, y[:, None]).squeeze(1) - other_max(logits, y)


def dlr_loss(logits: torch.Tensor, y: torch.Tensor, *, targeted: bool = False) -> torch.Tensor:
    """Difference-of-logits-ratio loss (Croce & Hein 2020), defined for 3 classes. Ascend it.

    Untargeted: -(z_y - max_{j!=y} z_j) / (z_pi1 - z_pi3), exactly as published; with 3 classes
    pi3 is the smallest logit, which is well defined.

    Targeted (y holds targets t, true labels are passed via `dlr_targeted_loss`): see there.
    """
    if logits.shape[1] < 3:
        raise ValueError("the DLR loss needs at least 3 classes")
    srt = logits.sort(dim=1, descending=True).values
    return -margin(logits, y) / (srt[:, 0] - srt[:, 2] + TINY)


def dlr_targeted_loss(logits: torch.Tensor, y_true: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR: -(z_y - z_t) / D. Ascend it.

    Published D = z_pi1 - (z_pi3 + z_pi4)/2 needs 4 classes. With 3 classes the obvious fix
    D = z_pi1 - z_pi3 is degenerate: when y is the top class and t the bottom one, D equals the
    numerator, the loss is constantly -1 and its gradient is zero (AutoAttack issue #70). We use
    D = z_pi1 - (z_pi2 + z_pi3)/2 for 3 classes, the top logit minus the mean of the others: still
    shift- and scale-invariant like the original, and never proportional to the numerator because
    it always involves the third class, which the numerator does not.
    """
    c = logits.shape[1]
    if c < 3:
        raise ValueError("the DLR loss needs at least 3 classes")
    srt = logits.sort(dim=1, descending=True).values
    if c == 3:
        denom = srt[:, 0] - 0.5 * (srt[:, 1] + srt[:, 2])
    else:
        denom = srt[:, 0] - 0.5 * (srt[:, 2] + srt[:, 3])
    z_y = logits.gather(1, y_true[:, None]).squeeze(1)
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    return -(z_y - z_t) / (denom + TINY)


LOSSES = ("ce", "cw", "dlr")


def attack_loss(logits: torch.Tensor, y: torch.Tensor, loss: str, targeted: bool) -> torch.Tensor:
    """Per-sample loss to *ascend*. For targeted attacks y holds the target classes."""
    if loss == "ce":
        ce = F.cross_entropy(logits, y, reduction="none")
        return -ce if targeted else ce
    if loss == "cw":
        # untargeted: max_{j!=y} z_j - z_y ; targeted: z_t - max_{j!=t} z_j
        m = margin(logits, y)
        return m if targeted else -m
    if loss == "dlr":
        if targeted:
            raise ValueError("targeted DLR needs the true labels; use apgd(..., loss='dlr', targeted=True)")
        return dlr_loss(logits, y)
    raise ValueError(f"unknown loss {loss!r}; valid: {', '.join(LOSSES)}")


def fooled(logits: torch.Tensor, y: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Boolean (N,): attack goal reached (misclassified, or classified as the target)."""
    pred = logits.argmax(dim=1)
    return pred == y if targeted else pred != y


def input_grad(model: torch.nn.Module, x_adv: torch.Tensor, y: torch.Tensor, loss: str, targeted: bool):
    """One forward+backward: returns (per-sample loss, logits, d loss / d x_adv)."""
    x_adv = x_adv.detach().requires_grad_(True)
    logits = logits_f32(model, x_adv)
    per_sample = attack_loss(logits, y, loss, targeted)
    (grad,) = torch.autograd.grad(per_sample.sum(), x_adv)
    return per_sample.detach(), logits.detach(), grad
