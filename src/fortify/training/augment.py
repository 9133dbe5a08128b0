"""Batch augmentation that keeps pixels exactly in [0,1]: horizontal flips, (optional) integer shifts,
(optional) intensity jitter, (optional) small rotations, (optional) random zoom crops, and mixup (a
batch-level step, `mixup_batch`).

Both are exact pixel permutations (shifted-in pixels are 0, i.e. air in CT), with no
interpolation. That matters: bilinear resampling (rotation, scaling) blurs the sharp
high-contrast edges of these CT slices, which shifts batch-norm statistics between augmented
training batches and un-augmented evaluation images; on IQ-OTH/NCCD that cost ~25 points of
eval-mode accuracy in a ResNet18 run.

Shifts are off by default (max_shift=0): on IQ-OTH/NCCD (ResNet18, 128 px, 20 epochs, AdamW; measured
with `benchmarks/training.py fit`) shifts of up to 6% kept the model from fitting its own training set
(95.9% train accuracy, benign 45/72; val 84.3%, test 89.2%), while flips alone fit it (100%, benign
72/72; val 89.3%, test 90.5%). The slices are acquired centred on the table, so position carries
information that shifting blurs.
Intensity jitter (per image: contrast c, brightness b, gamma g; x -> clip(c * x**g + b)) is pointwise, so
no edge is blurred; it mimics the reconstruction-kernel and windowing differences between scans. Rotation
resamples bilinearly (it does blur), which is why it is off by default and limited to small angles; its
corners are filled with 0 (air). Zoom is a random resized crop that only enlarges: a window of 1/z of
the image's side (z uniform in [1, 1 + max_zoom]) at a random place inside it, resampled bilinearly back
to full size, so nothing outside the slice is invented; it blurs like rotation.
Mixup (Zhang et al. 2018) blends image pairs and their one-hot targets.
All randomness comes from the caller's generator, so a resumed run replays the same augmentations.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def augment_batch(
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    max_shift: float = 0.0,
    intensity: float = 0.0,
    max_rotation: float = 0.0,
    max_zoom: float = 0.0,
) -> torch.Tensor:
    """x: float (N, C, H, W) in [0,1] on CPU -> augmented copy (same shape, still in [0,1]).

    Each image is mirrored left-right with probability 1/2, translated by up to `max_shift` of its
    size in each direction (whole pixels), jittered in intensity by up to `intensity` (contrast and
    gamma in [1 - s, 1 + s], brightness in [-s/2, s/2]), rotated by up to `max_rotation` degrees and
    zoomed in by a factor of up to 1 + `max_zoom` on a random window.
    Draws for a disabled augmentation are skipped, so flips-only runs replay exactly as before.
    """
    n = x.shape[0]
    flip = torch.rand(n, generator=generator) < 0.5
    out = torch.where(flip.view(n, 1, 1, 1), x.flip(-1), x)
    if max_shift > 0:
        out = _shift(out, generator, max_shift)
    if intensity > 0:
        out = _intensity(out, generator, intensity)
    if max_rotation > 0:
        out = _rotate(out, generator, max_rotation)
    if max_zoom > 0:
        out = _zoom(out, generator, max_zoom)
    return out


def _intensity(x: torch.Tensor, generator: torch.Generator, strength: float) -> torch.Tensor:
    n = x.shape[0]

    def draw(lo: float, hi: float) -> torch.Tensor:
        return (lo + (hi - lo) * torch.rand(n, generator=generator)).view(n, 1, 1, 1)

    contrast, gamma = draw(1 - strength, 1 + strength), draw(1 - strength, 1 + strength)
    brightness = draw(-strength / 2, strength / 2)
    return (contrast * x.clamp_min(0).pow(gamma) + brightness).clamp(0, 1)


def _rotate(x: torch.Tensor, generator: torch.Generator, max_degrees: float) -> torch.Tensor:
    n = x.shape[0]
    angle = (2 * torch.rand(n, generator=generator) - 1) * math.radians(max_degrees)
    cos, sin = torch.cos(angle), torch.sin(angle)
    zero = torch.zeros(n)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    return _resample(x, theta, padding="zeros")


def _zoom(x: torch.Tensor, generator: torch.Generator, max_zoom: float) -> torch.Tensor:
    n = x.shape[0]
    scale = 1.0 / (1.0 + max_zoom * torch.rand(n, generator=generator))  # window side / image side
    # the window's centre, in affine_grid's [-1, 1] coordinates, keeps the window inside the image
    cy, cx = ((2 * torch.rand(2, n, generator=generator) - 1) * (1 - scale)).unbind(0)
    zero = torch.zeros(n)
    theta = torch.stack([torch.stack([scale, zero, cx], 1), torch.stack([zero, scale, cy], 1)], 1)
    return _resample(x, theta, padding="border")


def _resample(x: torch.Tensor, theta: torch.Tensor, *, padding: str) -> torch.Tensor:
    """Bilinear resampling of each image at the affine map theta (N, 2, 3) of output to input coordinates."""
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False).clamp(0, 1)


def mixup_batch(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, generator: torch.Generator, *, alpha: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup: (lam * x + (1 - lam) * x[perm], the matching soft targets), one lam ~ Beta(alpha, alpha) per
    batch. torch's Beta sampler takes no generator, so it draws under a seed taken from `generator`
    inside a forked global RNG: the run stays replayable and the global RNG is left as it was."""
    n = x.shape[0]
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(n, generator=generator)
    targets = F.one_hot(y, num_classes).float()
    return lam * x + (1 - lam) * x[perm], lam * targets + (1 - lam) * targets[perm]


def _shift(out: torch.Tensor, generator: torch.Generator, max_shift: float) -> torch.Tensor:
    n, _, h, w = out.shape
    limit_y, limit_x = int(round(max_shift * h)), int(round(max_shift * w))
    dy = torch.randint(-limit_y, limit_y + 1, (n,), generator=generator)
    dx = torch.randint(-limit_x, limit_x + 1, (n,), generator=generator)
    shifted = torch.zeros_like(out)
    for i in range(n):
        sy, sx = int(dy[i]), int(dx[i])
        src = out[i, :, max(0, -sy) : h - max(0, sy), max(0, -sx) : w - max(0, sx)]
        shifted[i, :, max(0, sy) : max(0, sy) + src.shape[-2], max(0, sx) : max(0, sx) + src.shape[-1]] = src
    return shifted
