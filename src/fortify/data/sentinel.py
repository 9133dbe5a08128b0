"""The leakage sentinel: how well a model with no learning at all does on a split.

A 1-nearest-neighbour classifier on small raw-pixel thumbnails (train -> test) cannot generalise; it can
only recognise. If it rivals a trained network, the test set holds images the training set has already
seen in all but name (neighbouring slices of one scan), and the network's accuracy measures memory. Every
split and every fold stores this number, and results.json and the report put it beside the model's clean
accuracy with a warning when the model does not clearly beat it.

Also reported: the share of test images whose nearest training image is a file-number neighbour (same
class folder, file number within NEIGHBOUR_WINDOW), the direct symptom of a scan cut in two.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import torch

from fortify.data.dataset import ImageDataset
from fortify.data.groups import file_number
from fortify.intervals import interval_or_none

# px; the sentinel sees each image at this size. An evaluation loads the images straight at it (so the
# number does not move with the model's image size: 70.1% from 128 px images box-averaged to 32 vs 68.6%
# from 48 px ones on one split); a split made at another size box-averages its images down to it.
SENTINEL_THUMBNAIL = 32
NEIGHBOUR_WINDOW = 3  # file numbers this close, in one class folder, count as neighbouring slices
# The model must beat the sentinel by more than this (accuracy, 0..1) or the report warns loudly.
SENTINEL_MARGIN = 0.05
SENTINEL_METHOD = (
    f"1-nearest-neighbour (mean absolute difference) on {SENTINEL_THUMBNAIL}x{SENTINEL_THUMBNAIL} "
    "raw-pixel thumbnails, train -> test"
)


def thumbnails(ds: ImageDataset) -> torch.Tensor:
    size = min(SENTINEL_THUMBNAIL, ds.image_size)
    return torch.nn.functional.adaptive_avg_pool2d(ds.images.float(), size).flatten(1)


def _neighbours(a: str, b: str) -> bool:
    pa, pb = PurePosixPath(a), PurePosixPath(b)
    na, nb = file_number(a), file_number(b)
    return pa.parent == pb.parent and na is not None and nb is not None and abs(na - nb) <= NEIGHBOUR_WINDOW


def nearest_neighbours(
    query: torch.Tensor, bank: torch.Tensor, chunk: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """Index and distance (mean |difference| per pixel) of each query row's nearest bank row."""
    found = [torch.cdist(query[s : s + chunk], bank, p=1).min(1) for s in range(0, len(query), chunk)]
    return torch.cat([f.indices for f in found]), torch.cat([f.values for f in found]) / bank.shape[1]


def leakage_sentinel(train: ImageDataset, test: ImageDataset, chunk: int = 256) -> dict[str, Any]:
    """1-NN accuracy train -> test with its Wilson interval, and the file-number-neighbour share."""
    n = len(test)
    # the size the thumbnails were made from: SENTINEL_THUMBNAIL itself = loaded straight at that size
    made = {"method": SENTINEL_METHOD, "thumbnail": SENTINEL_THUMBNAIL, "thumbnail_from_px": test.image_size}
    if n == 0 or len(train) == 0:
        return {**made, "n_test": n, "accuracy": None}
    nearest, _ = nearest_neighbours(thumbnails(test), thumbnails(train), chunk)
    correct = int((train.labels[nearest] == test.labels).sum())
    neighbour = sum(_neighbours(test.paths[i], train.paths[j]) for i, j in enumerate(nearest.tolist()))
    per_class = {}
    for k, cls in enumerate(test.classes):
        mask = test.labels == k
        if mask.any():
            per_class[cls] = float((train.labels[nearest][mask] == k).double().mean())
    return {
        **made,
        "n_test": n,
        "n_train": len(train),
        "correct": correct,
        "accuracy": correct / n,
        "accuracy_ci": interval_or_none(correct, n),
        "per_class_recall": per_class,
        "neighbour_window": NEIGHBOUR_WINDOW,
        "neighbour_share": neighbour / n,
    }


def sentinel_warning(
    sentinel: dict[str, Any] | None,
    model_accuracy: float | None,
    model_recalls: dict[str, float | None] | None = None,
) -> str | None:
    """A loud one-liner when the model does not beat the sentinel by SENTINEL_MARGIN; else None.

    With the model's per-class recalls, the line names the classes on which the model trails the
    sentinel: on IQ-OTH/NCCD a fold can trip the sentinel because one class's slices look alike across
    patients (benchmarks/sentinel_pairs.py), and the classes show where the model learned too little."""
    if not sentinel or sentinel.get("accuracy") is None or model_accuracy is None:
        return None
    s = float(sentinel["accuracy"])
    if model_accuracy - s > SENTINEL_MARGIN:
        return None
    line = (
        f"LEAKAGE SUSPECTED: the model ({100 * model_accuracy:.1f}%) does not beat a 1-nearest-neighbour "
        f"classifier on raw pixels ({100 * s:.1f}%) by more than {100 * SENTINEL_MARGIN:.0f} points: either "
        "the test images are near-copies of training images (the split leaks) or the model learned little "
        "beyond recognising them"
    )
    sentinel_recalls = sentinel.get("per_class_recall") or {}
    trailing = [
        f"{cls} {100 * model_recalls[cls]:.1f}% vs {100 * r:.1f}%"
        for cls, r in sentinel_recalls.items()
        if model_recalls and model_recalls.get(cls) is not None and model_recalls[cls] < r
    ]
    if trailing:
        line += "; per class the model trails it on " + ", ".join(trailing)
    return line
