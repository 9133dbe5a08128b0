"""`audit_dataset`: what is in a dataset and what could mislead a model trained on it.

Reports counts, original sizes and modes per class, unreadable files, exact duplicates (decoded
pixels), near-duplicate groups (see groups.py) and shortcut warnings: cheap image properties
that predict the label on their own (a size found in only one class; file size or intensity
statistics that separate one class from the rest with AUC >= SHORTCUT_AUC). DICOM datasets also get
their tags counted (patients, studies, series, modalities, slice thicknesses); predefined train/val/test
folders get their cross-folder duplicates reported as leaks; and the dataset is identified when it is
IQ-OTH/NCCD (the report shows the study's numbers only then).
"""

from __future__ import annotations

import warnings as warnings_module
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fortify.data.dataset import ImageDataset
from fortify.data.dicom import DEFAULT_WINDOW, GROUP_TAGS, group_key, parse_window
from fortify.data.group_ids import group_ids, grouping_kind, mixed_label_groups
from fortify.data.groups import (
    NEAR_DUP_METHOD,
    NEAR_DUP_THRESHOLD,
    dataset_fingerprints,
    dataset_pixel_hashes,
    exact_duplicate_groups,
    leakage_groups,
    scan_run_calibration,
    split_leak_warning,
    split_leaks,
)
from fortify.data.identity import identify_dataset
from fortify.data.loader import load_dataset

AUDIT_FORMAT = "fortify-audit/1"
SHORTCUT_AUC = 0.90  # one-vs-rest AUC of a single property; 0.5 = useless, 1.0 = perfect predictor
NOTABLE_AUC = 0.80  # shown in the table/JSON as "moderate", not raised as a warning
MIN_EXCLUSIVE_COUNT = 3  # a size seen once or twice in one class is noted, not flagged


def _auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney AUC with average ranks for ties (no scipy needed)."""
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return 0.5
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average rank over each run of ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _continuous_shortcuts(ds: ImageDataset, labels: np.ndarray) -> list[dict[str, Any]]:
    imgs = ds.images.float().flatten(1)
    props: dict[str, np.ndarray] = {
        "mean intensity": imgs.mean(1).numpy(),
        "intensity std": imgs.std(1).numpy(),
        "dark fraction": (imgs < 20).float().mean(1).numpy(),
    }
    if ds.infos is not None and not ds.synthetic:
        props["file size"] = np.array([i.file_bytes for i in ds.infos], dtype=np.float64)
    out = []
    for name, values in props.items():
        best_cls, best_auc = None, 0.5
        for c, cls in enumerate(ds.classes):
            auc = _auc(values, labels == c)
            if abs(auc - 0.5) > abs(best_auc - 0.5):
                best_cls, best_auc = cls, auc
        separation = max(best_auc, 1 - best_auc)
        out.append(
            {
                "property": name,
                "class": best_cls,
                "auc": round(separation, 4),
                "direction": "higher" if best_auc >= 0.5 else "lower",
                "flagged": separation >= SHORTCUT_AUC,
                "level": "strong"
                if separation >= SHORTCUT_AUC
                else "moderate"
                if separation >= NOTABLE_AUC
                else "none",
            }
        )
    return out


def _exclusive_values(values: list[str], labels: np.ndarray, classes: list[str], prop: str) -> list[dict]:
    """Values of a categorical property that occur in exactly one class."""
    by_value: dict[str, Counter] = {}
    for v, y in zip(values, labels.tolist(), strict=True):
        by_value.setdefault(v, Counter())[classes[y]] += 1
    out = []
    for v, counts in sorted(by_value.items()):
        if len(counts) == 1 and len(by_value) > 1:
            cls, n = next(iter(counts.items()))
            out.append(
                {"property": prop, "value": v, "class": cls, "count": n, "flagged": n >= MIN_EXCLUSIVE_COUNT}
            )
    return out


def _dicom_summary(ds: ImageDataset) -> dict[str, Any] | None:
    """Counts of the DICOM tags (None without DICOM files). Identifiers are counted, never listed:
    audit.json travels with reports, and a PatientID identifies a person."""
    if ds.infos is None:
        return None
    dicom = [
        (info.tags or {}, int(y))
        for info, y in zip(ds.infos, ds.labels.tolist(), strict=True)
        if info.mode.startswith("DICOM")
    ]
    if not dicom:
        return None
    out: dict[str, Any] = {"files": len(dicom), "window": ds.window}
    if ds.window:
        out["window_hu"] = parse_window(ds.window).describe()
    for tag, name in zip(GROUP_TAGS, ("patients", "studies", "series"), strict=True):
        values = {t[tag] for t, _ in dicom if tag in t}
        out[name] = len(values)
        out[f"files_without_{tag}"] = sum(tag not in t for t, _ in dicom)
    out["modalities"] = dict(Counter(t.get("Modality", "unknown") for t, _ in dicom).most_common())
    out["slice_thickness_mm"] = dict(
        Counter(t.get("SliceThickness", "unknown") for t, _ in dicom).most_common()
    )
    classes_of: dict[str, set[int]] = {}
    for t, y in dicom:
        if "PatientID" in t:
            classes_of.setdefault(t["PatientID"], set()).add(y)
    out["patients_per_class"] = {
        c: sum(k in ys for ys in classes_of.values()) for k, c in enumerate(ds.classes)
    }
    out["patients_in_several_classes"] = sum(len(ys) > 1 for ys in classes_of.values())
    return out


def audit_dataset(
    data: str | Path | ImageDataset,
    *,
    image_size: int = 128,
    progress: bool = False,
    cache_dir: str | Path | None = None,
    near_dup_threshold: float = NEAR_DUP_THRESHOLD,
    window: str = DEFAULT_WINDOW,
) -> dict:
    """JSON-ready audit report. Raises DataError only when the data cannot be used at all.

    `window`: the display window for DICOM files (fortify.data.dicom), ignored for other images."""
    ds = (
        data
        if isinstance(data, ImageDataset)
        else load_dataset(data, image_size=image_size, cache_dir=cache_dir, progress=progress, window=window)
    )
    labels = ds.labels.numpy()
    counts, sizes, modes = _class_tables(ds, labels)
    exact = _exact_duplicates(ds, labels)
    near, scans, mixed = _near_duplicates(ds, labels, exact.groups, near_dup_threshold)
    categorical, continuous = _shortcuts(ds, labels)
    dicom = _dicom_summary(ds)
    given = _given_splits(ds, labels, exact.groups, near.groups)
    found = _Findings(
        ds=ds,
        counts=counts,
        sizes=sizes,
        modes=modes,
        exact=exact,
        near=near,
        near_dup_threshold=near_dup_threshold,
        scans=scans,
        categorical=categorical,
        continuous=continuous,
        dicom=dicom,
        given=given,
        mixed=mixed,
    )
    return _report(found, _warnings(found))


def input_facts(ds: ImageDataset) -> dict[str, Any]:
    """What loading did to the files: formats read (by extension), modes converted to 8-bit gray
    (colour, alpha, palette, 16-bit; counted per mode), and images smaller than the image size, which
    the resize upscales (their count and the smallest original size)."""
    formats = Counter(Path(str(p)).suffix.lower() or "(none)" for p in ds.paths)
    converted: Counter[str] = Counter()
    upscaled, smallest = 0, None
    for info in ds.infos or []:
        if info.mode != "L" and not info.mode.startswith("DICOM"):
            converted[info.mode] += 1
        if min(info.width, info.height) < ds.image_size:  # the center-square crop's side is the short one
            upscaled += 1
            if smallest is None or info.width * info.height < smallest[0] * smallest[1]:
                smallest = (info.width, info.height)
    return {
        "formats": dict(formats.most_common()),
        "converted_to_gray": dict(converted.most_common()),
        "upscaled": {
            "n": upscaled,
            "image_size": ds.image_size,
            "smallest": f"{smallest[0]}x{smallest[1]}" if smallest else None,
        },
    }


def _class_tables(ds: ImageDataset, labels: np.ndarray) -> tuple[dict, dict, dict]:
    """Per class: the image count, and the original sizes (most frequent first) and modes counted."""
    classes = ds.classes
    counts = {c: int((labels == i).sum()) for i, c in enumerate(classes)}
    sizes: dict[str, dict] = {c: {} for c in classes}
    modes: dict[str, dict] = {c: {} for c in classes}
    if ds.infos is not None:
        for info, y in zip(ds.infos, labels.tolist(), strict=True):
            key = f"{info.width}x{info.height}"
            sizes[classes[y]][key] = sizes[classes[y]].get(key, 0) + 1
            modes[classes[y]][info.mode] = modes[classes[y]].get(info.mode, 0) + 1
        sizes = {c: dict(sorted(v.items(), key=lambda kv: -kv[1])) for c, v in sizes.items()}
    return counts, sizes, modes


@dataclass
class _Duplicates:
    """Duplicate groups: as dataset indices, as the report writes them, and those spanning classes."""

    groups: list[list[int]]
    entries: list[dict[str, Any]]
    cross_class: list[dict[str, Any]]


def _exact_duplicates(ds: ImageDataset, labels: np.ndarray) -> _Duplicates:
    """Groups of images with identical decoded pixels."""
    exact = exact_duplicate_groups(dataset_pixel_hashes(ds))
    entries = [
        {"paths": [ds.paths[i] for i in g], "classes": sorted({ds.classes[labels[i]] for i in g})}
        for g in exact
    ]
    return _Duplicates(exact, entries, [g for g in entries if len(g["classes"]) > 1])


def _near_duplicates(
    ds: ImageDataset, labels: np.ndarray, exact: list[list[int]], near_dup_threshold: float
) -> tuple[_Duplicates, dict[str, Any], list[dict]]:
    """Near-duplicate groups among the deduplicated images, the scans block of the report, and the
    split's groups (scans or DICOM patients) whose images carry two labels."""
    # On the deduplicated images (what the split sees), and scans: runs of similar consecutive slices
    # merged with them (what the default split keeps together), with the calibration of the link
    # threshold against the documented case counts on IQ-OTH/NCCD.
    classes = ds.classes
    drop = {i for g in exact for i in g[1:]}
    kept = [i for i in range(len(ds)) if i not in drop]
    kept_labels = [int(labels[i]) for i in kept]
    keys = [group_key(ds.infos[i].tags) for i in kept] if ds.infos is not None else None
    all_fps = dataset_fingerprints(ds)
    with warnings_module.catch_warnings():
        warnings_module.simplefilter("ignore")  # a fallback is reported in the audit's own warnings
        scan = leakage_groups(
            all_fps[torch.tensor(kept, dtype=torch.long)],
            kept_labels,
            [ds.paths[i] for i in kept],
            list(classes),
            near_dup_threshold=near_dup_threshold,
            group_keys=keys,
        )
    near = [[kept[k] for k in g] for g in scan.near_duplicates]
    entries = [
        {
            "size": len(g),
            "classes": sorted({classes[labels[i]] for i in g}),
            "paths": [ds.paths[i] for i in g],
        }
        for g in near
    ]
    scans = {**scan.info, "calibration": scan_run_calibration(all_fps, labels.tolist(), ds.paths, classes)}
    ids = group_ids(scan.groups, kept_labels, classes, keys=keys, kind=grouping_kind(scan.info))
    mixed = mixed_label_groups(ids, kept_labels, classes)
    return _Duplicates(near, entries, [g for g in entries if len(g["classes"]) > 1]), scans, mixed


def _shortcuts(ds: ImageDataset, labels: np.ndarray) -> tuple[list[dict], list[dict]]:
    """(sizes and modes found in one class only, single image properties that predict the label)."""
    categorical = []
    if ds.infos is not None:
        categorical += _exclusive_values(
            [f"{i.width}x{i.height}" for i in ds.infos], labels, ds.classes, "image size"
        )
        categorical += _exclusive_values([i.mode for i in ds.infos], labels, ds.classes, "image mode")
    return categorical, _continuous_shortcuts(ds, labels)


def _given_splits(
    ds: ImageDataset, labels: np.ndarray, exact: list[list[int]], near: list[list[int]]
) -> dict[str, Any] | None:
    """Counts per predefined train/val/test folder and the groups leaking across them (None without)."""
    if ds.given_splits is None:
        return None
    keys = [group_key(i.tags) for i in ds.infos] if ds.infos is not None else None
    leaks = split_leaks(ds.given_splits, ds.paths, exact, near, keys)
    return {
        "counts": {
            s: {
                c: sum(g == s and int(y) == k for g, y in zip(ds.given_splits, labels, strict=True))
                for k, c in enumerate(ds.classes)
            }
            for s in ("train", "val", "test")
        },
        "leaks": leaks,
    }


@dataclass
class _Findings:
    """What the audit found, before it is written up as the report and its warnings."""

    ds: ImageDataset
    counts: dict[str, int]  # images per class
    sizes: dict[str, dict[str, int]]  # per class: original "WxH" -> images
    modes: dict[str, dict[str, int]]  # per class: image mode -> images
    exact: _Duplicates
    near: _Duplicates
    near_dup_threshold: float
    scans: dict[str, Any]
    categorical: list[dict]  # values found in one class only
    continuous: list[dict]  # single-property AUCs
    dicom: dict[str, Any] | None
    given: dict[str, Any] | None
    mixed: list[dict]  # the split's groups (data/group_ids.py) whose images carry two labels


def _warnings(found: _Findings) -> list[str]:
    """The report's warnings: the loader's, then one per finding that could mislead a model."""
    ds, exact, dicom, given = found.ds, found.exact.groups, found.dicom, found.given
    cross_exact, cross_near = found.exact.cross_class, found.near.cross_class
    warnings = list(ds.warnings)
    if ds.synthetic:
        warnings.insert(0, "synthetic phantom data: not real CT; results on it say nothing about patients")
    if exact:
        warnings.append(
            f"{len(exact)} exact-duplicate group(s) ({sum(len(g) - 1 for g in exact)} redundant "
            "image(s)); the split keeps one of each"
        )
    if cross_exact:
        warnings.append(
            f"{len(cross_exact)} exact-duplicate group(s) span classes (label noise): "
            f"{cross_exact[0]['paths']}"
        )
    if given is not None and split_leak_warning(given["leaks"]):
        warnings.append(split_leak_warning(given["leaks"]))
    if dicom and dicom["patients_in_several_classes"]:
        warnings.append(
            f"{dicom['patients_in_several_classes']} patient(s) have images in more than one class "
            "(label noise, or labels per slice rather than per patient)"
        )
    if found.mixed:
        first = found.mixed[0]
        warnings.append(
            f"{len(found.mixed)} group(s) the split keeps together carry two labels (e.g. {first['group']}: "
            + ", ".join(f"{n} {c}" for c, n in first["labels"].items())
            + "); patient-level metrics label each by its majority"
        )
    if "fallback" in found.scans:  # scans requested but file names carry no order
        warnings.append(found.scans["fallback"])
    if cross_near:
        warnings.append(
            f"{len(cross_near)} near-duplicate group(s) span classes (same patient under two labels?): "
            f"e.g. {', '.join(cross_near[0]['paths'][:4])}"
        )
    for s in found.categorical:
        if s["flagged"]:
            warnings.append(
                f"shortcut: {s['property']} {s['value']} occurs only in class {s['class']} "
                f"({s['count']} images); center-cropping removes the aspect ratio, not the source"
            )
    for s in found.continuous:
        if s["flagged"]:
            warnings.append(
                f"shortcut: {s['property']} separates class {s['class']} from the rest "
                f"(AUC {s['auc']:.2f}, {s['direction']})"
            )
    return warnings


def _report(found: _Findings, warnings: list[str]) -> dict:
    """The JSON-ready report (audit.json)."""
    ds, exact, near = found.ds, found.exact.groups, found.near.groups
    return {
        "format": AUDIT_FORMAT,
        "dataset": {
            "root": ds.source or ds.root,
            "synthetic": ds.synthetic,
            "classes": ds.classes,
            "n_files": len(ds) + len(ds.skipped),
            "n_images": len(ds),
            "identity": identify_dataset(
                ds.paths + [s["path"] for s in ds.skipped], len(ds) + len(ds.skipped), ds.synthetic
            ),
        },
        "preprocessing": {
            "image_size": ds.image_size,
            "grayscale": True,
            "crop": "center-square",
            **({"window": ds.window} if ds.window else {}),
        },
        "counts": found.counts,
        "sizes": found.sizes,
        "modes": found.modes,
        "inputs": input_facts(ds),
        "unreadable": list(ds.skipped),
        "exact_duplicates": {
            "n_groups": len(exact),
            "n_pairs": sum(len(g) * (len(g) - 1) // 2 for g in exact),
            "n_redundant": sum(len(g) - 1 for g in exact),
            "cross_class_groups": len(found.exact.cross_class),
            "groups": found.exact.entries,
        },
        "near_duplicates": {
            "method": NEAR_DUP_METHOD,
            "threshold": found.near_dup_threshold,
            "n_groups": len(near),
            "images_in_groups": sum(len(g) for g in near),
            "largest_group": max((len(g) for g in near), default=0),
            "group_sizes": {str(k): v for k, v in sorted(Counter(len(g) for g in near).items())},
            "cross_class_groups": len(found.near.cross_class),
            "groups": found.near.entries,
        },
        "scans": found.scans,
        "mixed_label_groups": found.mixed,
        **({"dicom": found.dicom} if found.dicom else {}),
        **({"given_splits": found.given} if found.given else {}),
        "shortcuts": {
            "exclusive_values": found.categorical,
            "single_property_auc": found.continuous,
            "auc_threshold": SHORTCUT_AUC,
            "auc_notable": NOTABLE_AUC,
        },
        "warnings": warnings,
    }
