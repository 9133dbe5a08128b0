"""Exact- and near-duplicate grouping, shared by the audit and the split.

Exact duplicates: identical decoded pixels (sha256 of the original-size 8-bit grayscale image).

Near-duplicates: adjacent CT slices of one patient look almost the same, and a model that sees
one in training and its neighbour in test is graded on memory. IQ-OTH/NCCD has no patient IDs, so
we link two images when their fingerprints (center-cropped image shrunk to 16x16 with box
averaging) differ by at most NEAR_DUP_THRESHOLD grey levels in mean absolute difference, and take
connected components (union-find). Threshold choice, measured on IQ-OTH/NCCD: consecutive file
numbers (which are mostly neighbouring slices) have median distance 3.6 and 54% are <= 4.0, while
fewer than 1% of random same-class pairs are <= 5.1 and those include same-patient pairs too.
At 4.0 the components stay patient-sized (largest 31 images; chaining does not run away), so the
threshold errs towards grouping, the safe side for leakage.
"""

from __future__ import annotations

from collections import defaultdict

import torch

NEAR_DUP_THRESHOLD = 4.0  # mean |difference| in grey levels (0..255) between 16x16 fingerprints
NEAR_DUP_METHOD = "mean abs difference of 16x16 box-downsampled center crops, union-find"


def exact_duplicate_groups(pixel_hashes: list[str]) -> list[list[int]]:
    """Groups (size >= 2) of indices with identical decoded pixels, in first-index order."""
    by_hash: dict[str, list[int]] = defaultdict(list)
    for i, h in enumerate(pixel_hashes):
        by_hash[h].append(i)
    return sorted((g for g in by_hash.values() if len(g) > 1), key=lambda g: g[0])


def _find(parent: list[int], a: int) -> int:
    while parent[a] != a:
        parent[a] = parent[parent[a]]
        a = parent[a]
    return a


def near_duplicate_pairs(
    fingerprints: torch.Tensor, threshold: float = NEAR_DUP_THRESHOLD, chunk: int = 256
) -> list[tuple[int, int, float]]:
    """All pairs i < j whose fingerprint distance is <= threshold (chunked: memory stays small)."""
    fp = fingerprints.float()
    n, dim = fp.shape
    pairs: list[tuple[int, int, float]] = []
    for start in range(0, n, chunk):
        dist = torch.cdist(fp[start : start + chunk], fp, p=1) / dim
        rows, cols = torch.nonzero(dist <= threshold, as_tuple=True)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            i = start + r
            if i < c:
                pairs.append((i, c, float(dist[r, c])))
    return pairs


def union_groups(n: int, pairs: list[tuple[int, int, float]]) -> list[list[int]]:
    """Connected components (size >= 2) of the pair graph, each sorted, ordered by first index."""
    parent = list(range(n))
    for i, j, _ in pairs:
        ri, rj = _find(parent, i), _find(parent, j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    comps: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        comps[_find(parent, i)].append(i)
    return sorted((g for g in comps.values() if len(g) > 1), key=lambda g: g[0])


def check_threshold(threshold: float) -> float:
    if not 0 <= threshold <= 255:
        from fortify.errors import ConfigError

        raise ConfigError(f"near-duplicate threshold must be between 0 and 255 grey levels, got {threshold}")
    return float(threshold)


def near_duplicate_groups(
    fingerprints: torch.Tensor, threshold: float = NEAR_DUP_THRESHOLD
) -> list[list[int]]:
    return union_groups(fingerprints.shape[0], near_duplicate_pairs(fingerprints, check_threshold(threshold)))


def dataset_pixel_hashes(dataset) -> list[str]:
    """Decoded-pixel hashes; a hand-built ImageDataset without infos falls back to file hashes."""
    if dataset.infos is not None:
        return [info.pixel_sha256 for info in dataset.infos]
    return list(dataset.file_hashes)


def dataset_fingerprints(dataset) -> torch.Tensor:
    """Near-duplicate fingerprints; computed from the preprocessed images when not stored."""
    if dataset.fingerprints is not None:
        return dataset.fingerprints
    from fortify.data.decode import FINGERPRINT_SIZE

    pooled = torch.nn.functional.adaptive_avg_pool2d(dataset.images.float(), FINGERPRINT_SIZE)
    return pooled.round().clamp(0, 255).to(torch.uint8).flatten(1)
