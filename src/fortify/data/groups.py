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

import re
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

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


# ---------------------------------------------------------------------------------------------------
# Scan runs: contiguous slices of one CT scan.
#
# IQ-OTH/NCCD has no patient IDs, but within a class its file numbers follow slice order, so a scan is a
# run of consecutive numbers whose neighbouring slices look alike. Near-duplicate groups (above) catch
# only slices that are almost identical; neighbouring slices 3-10 mm apart differ more than that but are
# still the same patient, and a 1-nearest-neighbour classifier on raw pixels scored 91% on a split that
# kept them apart. So: within each class folder, order files by the number in their name, link each file
# to the next one when their fingerprints (the 16x16 near-duplicate thumbnails, independent of the
# training image size) differ by at most SCAN_LINK_THRESHOLD grey levels, and cut the sequence wherever
# they differ more. A run is never split across train/val/test.
#
# Calibration on IQ-OTH/NCCD (`fortify audit` prints the table; tests/data/test_data_real.py checks it).
# The dataset's authors document 15 benign, 40 malignant and 55 normal cases (110 scans; the distributed
# copy holds 1,097 of their 1,190 slices). Consecutive-slice distances are small (median 2.8-4.9 grey
# levels) with a long tail. Runs per class (benign/malignant/normal) by link threshold:
#     6: 44/177/101   8: 34/109/82   10: 30/67/72   12: 24/56/55   15: 12/36/28   18: 4/18/12
# A scan cut in two leaks (its halves can land on both sides); two scans merged only cost some split
# flexibility. 12 is the highest threshold at which no class has fewer runs than documented scans.
# Checked on seed-0/1 splits (make_split, 70/15/15) with the 1-NN sentinel and the
# share of test images whose nearest training image is a file-number neighbour:
#     near-duplicate groups only: 1-NN 92.4% / 89.9%, neighbour 58% / 48%
#     scan runs at 8:  67.7% / 84.2%, neighbour 6% / 12%      at 10: 58.2% / 63.3%, 2% / 3%
#     scan runs at 12: 70.3% / 72.8%, neighbour 1% / 1%       at 15: 70.4% / 43.0%, 0% / 1%
# Past 12 the neighbour share is already ~0 and the groups grow large (largest 69 images at 15, 189 at
# 18), which makes stratified splits lumpy without removing more leakage.
SCAN_LINK_THRESHOLD = 12.0
SCAN_METHOD = (
    "within each class folder, files in natural order of the number in their name; consecutive files "
    "linked when their 16x16 center-crop thumbnails differ by <= threshold grey levels (mean absolute "
    "difference); runs merged with near-duplicate groups (union-find)"
)
# Documented scans (cases) per class, for the audit's calibration table (Alyasriy & AL-Huseiny 2021).
IQOTHNCCD_CASES = {"benign": 15, "malignant": 40, "normal": 55}
_NUMBER = re.compile(r"\d+")


def file_number(path: str) -> int | None:
    """The last number in the file name's stem ("Bengin case (12).jpg" -> 12); None when there is none."""
    numbers = _NUMBER.findall(PurePosixPath(path).stem)
    return int(numbers[-1]) if numbers else None


def ordered_by_class_folder(paths: list[str], labels: list[int]) -> dict[tuple[int, str], list[int]] | None:
    """Indices per (label, folder) sorted by file number; None when some file name carries no number."""
    numbers = [file_number(p) for p in paths]
    if any(n is None for n in numbers):
        return None
    seqs: dict[tuple[int, str], list[int]] = defaultdict(list)
    for i, (p, y) in enumerate(zip(paths, labels, strict=True)):
        seqs[(int(y), str(PurePosixPath(p).parent))].append(i)
    return {k: sorted(v, key=lambda i: (numbers[i], paths[i])) for k, v in seqs.items()}


def consecutive_distances(fingerprints: torch.Tensor, seq: list[int]) -> torch.Tensor:
    """Mean |difference| (grey levels) between each file and the next one of `seq`."""
    if len(seq) < 2:
        return torch.zeros(0)
    fp = fingerprints[seq].float()
    return (fp[1:] - fp[:-1]).abs().mean(1)


@dataclass
class Grouping:
    """Which images must stay on one side of every split, and how that was decided."""

    groups: list[list[int]]  # every index exactly once (singletons included), each group sorted
    near_duplicates: list[list[int]] = field(default_factory=list)  # near-duplicate groups alone (size >= 2)
    info: dict[str, Any] = field(default_factory=dict)  # JSON-ready: method, thresholds, runs per class


GROUPINGS = ("scan", "near-duplicate")


class GroupingWarning(UserWarning):
    """The requested grouping could not be applied as asked (e.g. file names carry no slice order)."""


def leakage_groups(
    fingerprints: torch.Tensor,
    labels: list[int],
    paths: list[str],
    classes: list[str],
    *,
    grouping: str = "scan",
    near_dup_threshold: float = NEAR_DUP_THRESHOLD,
    scan_threshold: float = SCAN_LINK_THRESHOLD,
    group_keys: list[str | None] | None = None,
) -> Grouping:
    """Groups for a leakage-safe split: scan runs merged with near-duplicate groups ("scan"), or the
    near-duplicate groups alone ("near-duplicate", the old behaviour). File names without numbers
    fall back to near-duplicate groups with a GroupingWarning.

    `group_keys` (DICOM: "PatientID=..." else study, else series; None for a file without those tags):
    where a file has one, its group is every file with the same key, overriding the image-similarity
    grouping, which then only groups the files without a key."""
    if grouping not in GROUPINGS:
        from fortify.errors import ConfigError

        raise ConfigError(f"unknown grouping {grouping!r}; choose one of {', '.join(GROUPINGS)}")
    n = len(paths)
    pairs = near_duplicate_pairs(fingerprints, check_threshold(near_dup_threshold)) if n else []
    near = union_groups(n, pairs)
    info: dict[str, Any] = {
        "requested": grouping,
        "near_duplicates": {"method": NEAR_DUP_METHOD, "threshold": near_dup_threshold},
    }
    applied = grouping
    runs_per_class: dict[str, int] = {}
    all_keyed = group_keys is not None and all(k is not None for k in group_keys)
    if grouping == "scan" and not all_keyed:  # with a key on every file, scans are not needed
        seqs = ordered_by_class_folder(paths, labels)
        if seqs is None:
            applied = "near-duplicate"
            msg = (
                "file names carry no slice numbers, so scans cannot be reconstructed: the split groups "
                "near-duplicates only and neighbouring slices of one scan may land on both sides"
            )
            info["fallback"] = msg
            warnings.warn(msg, GroupingWarning, stacklevel=2)
        else:
            check_threshold(scan_threshold)
            runs_per_class = {c: 0 for c in classes}
            for (label, _), seq in sorted(seqs.items()):
                dist = consecutive_distances(fingerprints, seq).tolist()
                runs_per_class[classes[label]] += 1 + sum(d > scan_threshold for d in dist)
                links = zip(seq[:-1], seq[1:], dist, strict=True)
                pairs += [(a, b, d) for a, b, d in links if d <= scan_threshold]
            info["scan"] = {
                "method": SCAN_METHOD,
                "threshold": scan_threshold,
                "runs_per_class": runs_per_class,
            }
    if group_keys is not None and any(k is not None for k in group_keys):
        pairs, applied = _key_pairs(group_keys, pairs, applied, info)
    info["applied"] = applied
    multi = union_groups(n, pairs)
    grouped = {i for g in multi for i in g}
    groups = multi + [[i] for i in range(n) if i not in grouped]
    info["groups"] = len(groups)
    info["largest_group"] = max((len(g) for g in groups), default=0)
    info["images_in_multi_image_groups"] = len(grouped)
    return Grouping(groups=groups, info=info, near_duplicates=near)


def _key_pairs(
    keys: list[str | None], pairs: list[tuple[int, int, float]], applied: str, info: dict[str, Any]
) -> tuple[list[tuple[int, int, float]], str]:
    """Links for key-grouped files (each to the first file of its key) plus the similarity links
    between files without a key; records which tags were used in `info["dicom"]`."""
    first: dict[str, int] = {}
    by_tag: dict[str, int] = defaultdict(int)
    linked = [(a, b, d) for a, b, d in pairs if keys[a] is None and keys[b] is None]
    for i, k in enumerate(keys):
        if k is None:
            continue
        by_tag[k.split("=", 1)[0]] += 1
        if first.setdefault(k, i) != i:
            linked.append((first[k], i, 0.0))
    untagged = sum(k is None for k in keys)
    info["dicom"] = {
        "files_by_tag": dict(by_tag),
        "keys": len(first),
        "files_without_tags": untagged,
        "rest_grouped_by": applied if untagged else None,
    }
    return linked, "dicom " + "/".join(t for t in by_tag)


def scan_run_calibration(
    fingerprints: torch.Tensor,
    labels: list[int],
    paths: list[str],
    classes: list[str],
    thresholds: tuple[float, ...] = (6, 8, 10, 12, 15, 18, 20),
) -> dict[str, Any] | None:
    """Runs per class at several link thresholds, beside the documented case counts when the classes
    are IQ-OTH/NCCD's; None when file names carry no order."""
    seqs = ordered_by_class_folder(paths, labels)
    if seqs is None:
        return None
    dists: dict[str, list[float]] = {c: [] for c in classes}
    n_seqs: dict[str, int] = {c: 0 for c in classes}
    for (label, _), seq in seqs.items():
        dists[classes[label]] += consecutive_distances(fingerprints, seq).tolist()
        n_seqs[classes[label]] += 1
    table = {f"{t:g}": {c: n_seqs[c] + sum(d > t for d in dists[c]) for c in classes} for t in thresholds}
    out: dict[str, Any] = {"thresholds": table, "chosen": SCAN_LINK_THRESHOLD}
    if sorted(classes) == sorted(IQOTHNCCD_CASES):
        out["documented_cases"] = dict(IQOTHNCCD_CASES)
    return out


def split_leaks(
    splits: list[str],
    paths: list[str],
    exact: list[list[int]],
    near: list[list[int]],
    keys: list[str | None] | None = None,
    limit: int = 20,
) -> dict[str, Any]:
    """Groups (indices into `paths`) whose members sit in more than one of a dataset's predefined split
    folders: exact duplicates, near-duplicates, and with DICOM `keys` (see dicom.group_key) patients (else
    studies, series). The first `limit` groups of each kind are listed, each by its paths (patients: the
    first path in each folder, never the ID) and `example`, one path from each of two folders."""

    def spanning(groups: list[list[int]]) -> list[list[int]]:
        return [g for g in groups if len({splits[i] for i in g}) > 1]

    def shown(groups: list[list[int]], all_paths: bool) -> list[dict[str, Any]]:
        out = []
        for g in groups:
            first: dict[str, str] = {}
            for i in g:
                first.setdefault(splits[i], paths[i])
            out.append(
                {
                    "paths": [paths[i] for i in g] if all_paths else list(first.values()),
                    "splits": sorted(first),
                    "example": list(first.values())[:2],
                    "images": len(g),
                }
            )
        return out

    kinds = {"exact": exact, "near": near}
    if keys is not None and any(k is not None for k in keys):
        by_key: dict[str, list[int]] = defaultdict(list)
        for i, k in enumerate(keys):
            if k is not None:
                by_key[k].append(i)
        kinds["patient"] = list(by_key.values())
    out = {}
    for kind, groups in kinds.items():
        leaking = spanning(groups)
        out[kind] = {
            "n_groups": len(leaking),
            "images": sum(len(g) for g in leaking),
            "groups": shown(leaking[:limit], all_paths=kind != "patient"),
        }
    return out


_LEAK_LABELS = {
    "exact": "exact-duplicate group(s)",
    "near": "near-duplicate group(s)",
    "patient": "patient(s) (DICOM PatientID, else study/series UID)",
}


def split_leak_warning(leaks: dict[str, Any]) -> str | None:
    """One line when the predefined splits share images or patients; None when they do not."""
    parts = [
        f"{info['n_groups']} {_LEAK_LABELS[kind]} (e.g. {' <-> '.join(info['groups'][0]['example'])})"
        for kind, info in leaks.items()
        if info["n_groups"]
    ]
    if not parts:
        return None
    return (
        "the predefined split folders leak: "
        + " and ".join(parts)
        + " span train/val/test; a model is tested on images (or patients) it trained on"
    )
