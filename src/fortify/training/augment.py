"""Batch augmentation that keeps pixels exactly in [0,1]: horizontal flips and (optional) integer shifts.

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
All randomness comes from the caller's generator, so a resumed run replays the same augmentations.
"""

from __future__ import annotations

import torch


def augment_batch(x: torch.Tensor, generator: torch.Generator, *, max_shift: float = 0.0) -> torch.Tensor:
    """x: float (N, C, H, W) in [0,1] on CPU -> flipped/shifted copy (same shape, still in [0,1]).

    Each image is mirrored left-right with probability 1/2 and translated by up to
    `max_shift` of its size in each direction (whole pixels).
    """
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=generator) < 0.5
    out = torch.where(flip.view(n, 1, 1, 1), x.flip(-1), x)
    if max_shift <= 0:
        return out
    limit_y, limit_x = int(round(max_shift * h)), int(round(max_shift * w))
    dy = torch.randint(-limit_y, limit_y + 1, (n,), generator=generator)
    dx = torch.randint(-limit_x, limit_x + 1, (n,), generator=generator)
    shifted = torch.zeros_like(out)
    for i in range(n):
        sy, sx = int(dy[i]), int(dx[i])
        src = out[i, :, max(0, -sy) : h - max(0, sy), max(0, -sx) : w - max(0, sx)]
        shifted[i, :, max(0, sy) : max(0, sy) + src.shape[-2], max(0, sx) : max(0, sx) + src.shape[-1]] = src
    return shifted
