"""Stable ids for the split's groups: the patients a patient-level evaluation aggregates over.

A group the split keeps together is a reconstructed scan (IQ-OTH/NCCD: a run of similar consecutive
slices merged with its near-duplicates) or a DICOM patient (PatientID, else StudyInstanceUID, else
SeriesInstanceUID). Each gets an id that depends only on the data and the grouping, so every fold of a
cross-validation names a patient the same way:
  - DICOM: a pseudonym of the tag's value, "patient-<12 hex digits of its sha256>" (else "study-...",
    "series-..."): the same patient always gets the same id, and no identifier is written;
  - otherwise "<class>/scan-007" (scan grouping) or "<class>/group-007" (near-duplicate grouping): the
    class of the group's first image, numbered per class in dataset order (class folder, file number);
  - `--grouping given` keeps a dataset's own folders, which are not patients: one group per image (its
    path) unless DICOM names the patient.
A group whose images carry two labels is reported by the audit (`mixed_label_groups`).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from typing import Any

_TAG_NAMES = {"PatientID": "patient", "StudyInstanceUID": "study", "SeriesInstanceUID": "series"}


def _key_value(key: str) -> str:
    """A DICOM group key ("PatientID=P-001", dicom.group_key's form) as a pseudonym: "patient-" and the
    first 12 hex digits of the value's sha256. Stable across splits and folds, and no identifier is
    written (the audit's rule: identifiers are counted, never written)."""
    tag, _, value = key.partition("=")
    return f"{_TAG_NAMES.get(tag, 'group')}-{hashlib.sha256(value.encode()).hexdigest()[:12]}"


def group_ids(
    groups: Sequence[Sequence[int]],
    labels: Sequence[int],
    classes: Sequence[str],
    *,
    keys: Sequence[str | None] | None = None,
    kind: str = "scan",
) -> list[str]:
    """One id per image (indices as in `groups`, which cover every image once)."""
    ids: list[str] = [""] * len(labels)
    width = max(3, len(str(len(groups))))
    numbered: Counter[str] = Counter()
    for group in sorted(groups, key=min):
        first = min(group)
        key = keys[first] if keys is not None else None
        if key is not None:
            name = _key_value(key)
        else:
            cls = classes[int(labels[first])]
            numbered[cls] += 1
            name = f"{cls}/{kind}-{numbered[cls]:0{width}d}"
        for i in group:
            ids[i] = name
    return ids


def per_image_ids(paths: Sequence[str], keys: Sequence[str | None] | None = None) -> list[str]:
    """`--grouping given`: each image its own group (its path), unless DICOM names its patient."""
    if keys is None:
        return list(paths)
    return [_key_value(k) if k is not None else p for p, k in zip(paths, keys, strict=True)]


def grouping_kind(info: dict[str, Any]) -> str:
    """ "scan" when scans were reconstructed (leakage_groups recorded them), else "group"."""
    return "scan" if "scan" in info else "group"


def mixed_label_groups(ids: Sequence[str], labels: Sequence[int], classes: Sequence[str]) -> list[dict]:
    """Groups whose images carry more than one label: [{"group", "labels": {class: n}}], in id order."""
    by_group: dict[str, Counter[str]] = {}
    for g, y in zip(ids, labels, strict=True):
        by_group.setdefault(g, Counter())[classes[int(y)]] += 1
    return [
        {"group": g, "labels": {c: n for c, n in sorted(counts.items())}}
        for g, counts in sorted(by_group.items())
        if len(counts) > 1
    ]
