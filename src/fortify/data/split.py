"""Leakage-safe, stratified, seeded train/val/test split (or K folds) and its manifest.

Rules: exact duplicates are dropped (the first in path order is kept, the rest listed);
groups (reconstructed scans merged with near-duplicate groups, see groups.py) go to one split as a
whole; per class, each split gets its target share
(largest-remainder rounding of fraction x class size). Groups are placed largest first into the
split with the biggest remaining deficit they fit in, then singletons fill the gaps exactly, so
class counts hit the targets whenever the groups allow it. The seed shuffles the group order.

DICOM files that carry PatientID (else StudyInstanceUID, else SeriesInstanceUID) are grouped by it
instead of by image similarity. `grouping="given"` keeps a dataset's own train/val/test folders (see
discover.py): exact duplicates are still dropped (the first copy, in train where there is one, is kept),
duplicates and near-duplicates across the folders are recorded and warned about, and a missing val folder
is carved out of train group by group.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from fortify.data.dataset import ImageDataset
from fortify.data.dicom import DEFAULT_WINDOW, group_key
from fortify.data.group_ids import group_ids, grouping_kind, per_image_ids
from fortify.data.groups import (
    GROUPINGS,
    NEAR_DUP_METHOD,
    NEAR_DUP_THRESHOLD,
    SCAN_LINK_THRESHOLD,
    GroupingWarning,
    dataset_fingerprints,
    dataset_pixel_hashes,
    exact_duplicate_groups,
    leakage_groups,
    split_leak_warning,
    split_leaks,
)
from fortify.data.loader import DataWarning, load_dataset
from fortify.data.sentinel import leakage_sentinel
from fortify.errors import ConfigError, DataError
from fortify.fileio import read_json, write_json

MANIFEST_FORMAT = "fortify-split/1"
SPLIT_NAMES = ("train", "val", "test")
GIVEN = "given"  # grouping choice: the dataset's own train/val/test folders
SPLIT_GROUPINGS = (*GROUPINGS, GIVEN)


@dataclass
class SplitManifest:
    dataset: dict[str, Any]  # root, classes, n_files, synthetic
    preprocessing: dict[str, Any]  # image_size, grayscale, crop
    seed: int
    fractions: list[float]
    # name -> [{"path", "label", "sha256", "group"}]; "group": the patient/scan id (data/group_ids.py),
    # absent in manifests written before it existed (then every image is its own group)
    splits: dict[str, list[dict[str, Any]]]
    dropped_duplicates: list[dict[str, str]] = field(default_factory=list)  # {"path", "duplicate_of"}
    near_duplicate_groups: int = 0
    near_duplicates: dict[str, Any] = field(default_factory=dict)  # method, threshold, grouped images
    skipped_unreadable: list[dict[str, str]] = field(default_factory=list)
    grouping: dict[str, Any] = field(default_factory=dict)  # leakage_groups' info: method, runs per class
    sentinel: dict[str, Any] = field(default_factory=dict)  # fortify.data.sentinel.leakage_sentinel
    fold: dict[str, Any] | None = None  # {"index", "k", "val_fraction"} for a cross-validation fold
    format: str = MANIFEST_FORMAT

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {"format": d.pop("format"), **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SplitManifest:
        if not isinstance(d, dict) or d.get("format") != MANIFEST_FORMAT:
            raise DataError(f"not a fortify split manifest (expected format {MANIFEST_FORMAT!r})")
        missing = [k for k in ("dataset", "preprocessing", "seed", "fractions", "splits") if k not in d]
        missing += [k for k in ("dataset", "preprocessing", "splits") if not isinstance(d.get(k, {}), dict)]
        if not missing:
            missing = [f"dataset.{k}" for k in ("root", "classes") if k not in d["dataset"]]
            missing += [f"splits.{n}" for n in SPLIT_NAMES if not isinstance(d["splits"].get(n), list)]
        if not missing:
            missing = [
                f"splits.{n}[{i}].{k}"
                for n in SPLIT_NAMES
                for i, e in enumerate(d["splits"][n])
                for k in ("path", "label", "sha256")
                if k not in e
            ][:1]
        if missing:
            raise DataError(f"split manifest is incomplete or malformed (missing {', '.join(missing)})")
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def counts(self) -> dict[str, dict[str, int]]:
        classes = self.dataset["classes"]
        return {
            name: {c: sum(1 for e in self.splits[name] if e["label"] == i) for i, c in enumerate(classes)}
            for name in SPLIT_NAMES
        }


def _check_fractions(fractions) -> tuple[float, float, float]:
    try:
        fr = tuple(round(float(f), 10) for f in fractions)  # 1 - 0.2 - 0.1 -> 0.7, not 0.7000000000000001
    except (TypeError, ValueError) as e:
        raise ConfigError(f"split fractions must be three numbers, got {fractions!r}") from e
    if len(fr) != 3 or any(f < 0 for f in fr) or fr[0] <= 0 or abs(sum(fr) - 1.0) > 1e-6:
        raise ConfigError(
            f"split fractions (train, val, test) must be >= 0 with train > 0 and sum to 1, got "
            f"({', '.join(f'{f:.4g}' for f in fr)})"
        )
    return fr  # type: ignore[return-value]


def _targets(n: int, fractions: tuple[float, ...]) -> list[int]:
    """Largest-remainder rounding: integer counts summing to n, each within 1 of fraction * n."""
    raw = [f * n for f in fractions]
    out = [int(np.floor(r)) for r in raw]
    for k in sorted(range(len(raw)), key=lambda k: (-(raw[k] - out[k]), k))[: n - sum(out)]:
        out[k] += 1
    return out


def _assign(
    groups: list[list[int]],
    labels: np.ndarray,
    n_classes: int,
    fractions: tuple[float, ...],
    rng: np.random.Generator,
) -> list[int]:
    """Split index per group (`labels` indexed by the groups' members)."""
    members = np.concatenate([np.asarray(g, dtype=np.int64) for g in groups]) if groups else np.zeros(0, int)
    per_class = np.bincount(labels[members], minlength=n_classes)  # the groups' own images only
    target = np.array([_targets(int(n), fractions) for n in per_class])  # (classes, splits)
    current = np.zeros_like(target)
    order = rng.permutation(len(groups))
    order = sorted(order.tolist(), key=lambda g: -len(groups[g]))  # stable: seed decides ties
    choice = [0] * len(groups)
    for g in order:
        need = np.bincount(labels[groups[g]], minlength=n_classes)
        deficit = target - current  # (classes, splits)
        fits = [s for s in range(len(fractions)) if np.all(deficit[need > 0, s] >= need[need > 0])]
        gain = deficit[need > 0].sum(axis=0).astype(float) + rng.uniform(0, 1e-3, size=len(fractions))
        if fits:
            best = max(fits, key=lambda s: gain[s])
        else:  # overshoot as little as possible
            over = np.minimum(0, deficit - need[:, None]).sum(axis=0)
            best = max(range(len(fractions)), key=lambda s: (over[s], gain[s]))
        choice[g] = best
        current[:, best] += need
    return choice


@dataclass
class _Prepared:
    """A dataset reduced to its unique images, with the groups that must not be cut."""

    ds: ImageDataset
    kept: np.ndarray  # dataset indices of the images that take part (exact duplicates dropped)
    labels: np.ndarray  # labels of `kept`
    groups: list[list[int]]  # indices into `kept`
    grouping: dict[str, Any]
    near_duplicates: list[list[int]]  # near-duplicate groups alone (indices into `kept`), for the manifest
    dropped: list[dict[str, str]]
    ids: list[str] = field(default_factory=list)  # each kept image's group id (indices into `kept`)


def _prepare(
    dataset_or_path: ImageDataset | str | Path,
    *,
    image_size: int,
    cache_dir: str | Path | None,
    progress: bool,
    near_dup_threshold: float,
    grouping: str,
    scan_threshold: float,
    window: str,
) -> _Prepared:
    if grouping not in SPLIT_GROUPINGS:
        raise ConfigError(f"unknown grouping {grouping!r}; choose one of {', '.join(SPLIT_GROUPINGS)}")
    ds = (
        dataset_or_path
        if isinstance(dataset_or_path, ImageDataset)
        else load_dataset(
            dataset_or_path, image_size=image_size, cache_dir=cache_dir, progress=progress, window=window
        )
    )
    if grouping == GIVEN and ds.given_splits is None:
        raise ConfigError(
            f"grouping {GIVEN!r} needs a dataset root of train/, val/ (optional) and test/ folders of class "
            f"folders; {ds.source or ds.root} holds class folders"
        )
    labels_all = ds.labels.numpy()
    dropped: list[dict[str, str]] = []
    drop: set[int] = set()
    for group in exact_duplicate_groups(dataset_pixel_hashes(ds)):
        keep = group[0]
        for i in group[1:]:
            drop.add(i)
            dropped.append({"path": ds.paths[i], "duplicate_of": ds.paths[keep]})
    kept = np.array([i for i in range(len(ds)) if i not in drop], dtype=np.int64)
    labels = labels_all[kept]
    keys = [group_key(ds.infos[i].tags) for i in kept] if ds.infos is not None else None
    requested = grouping
    if grouping == GIVEN:  # similarity groups only matter for carving val out of train
        missing_val = "val" not in {ds.given_splits[i] for i in kept}
        grouping = "scan" if missing_val else "near-duplicate"
    with warnings.catch_warnings():
        warnings.simplefilter("always", GroupingWarning)
        with warnings.catch_warnings(record=True) as caught:
            g = leakage_groups(
                dataset_fingerprints(ds)[kept],
                labels.tolist(),
                [ds.paths[i] for i in kept],
                list(ds.classes),
                grouping=grouping,
                near_dup_threshold=near_dup_threshold,
                scan_threshold=scan_threshold,
                group_keys=keys,
            )
    for w in caught:  # re-emit from here so the user sees one warning pointing at their call
        warnings.warn(str(w.message), DataWarning, stacklevel=3)
    if requested == GIVEN:  # the folders are not patients: an image is its own group unless DICOM says
        ids = per_image_ids([ds.paths[i] for i in kept], keys)
    else:
        ids = group_ids(g.groups, labels.tolist(), ds.classes, keys=keys, kind=grouping_kind(g.info))
    return _Prepared(ds, kept, labels, g.groups, g.info, g.near_duplicates, dropped, ids)


def _preprocessing(ds: ImageDataset) -> dict[str, Any]:
    out: dict[str, Any] = {"image_size": ds.image_size, "grayscale": True, "crop": "center-square"}
    if ds.window is not None:  # only DICOM pixels depend on it
        out["window"] = ds.window
    return out


def _manifest(
    prep: _Prepared,
    split_of_group: list[int],
    *,
    seed: int,
    fractions: tuple[float, ...],
    near_dup_threshold: float,
    fold: dict[str, Any] | None = None,
) -> SplitManifest:
    ds, labels_all = prep.ds, prep.ds.labels.numpy()
    splits: dict[str, list[dict[str, Any]]] = {name: [] for name in SPLIT_NAMES}
    for group, s in zip(prep.groups, split_of_group, strict=True):
        for k in group:
            i = int(prep.kept[k])
            splits[SPLIT_NAMES[s]].append(
                {
                    "path": ds.paths[i],
                    "label": int(labels_all[i]),
                    "sha256": ds.file_hashes[i],
                    "group": prep.ids[k],
                }
            )
    for name, frac in zip(SPLIT_NAMES, fractions, strict=True):
        empty = [
            c for k, c in enumerate(ds.classes) if frac > 0 and not any(e["label"] == k for e in splits[name])
        ]
        if empty:
            warnings.warn(
                f"split {name!r} has no images of class(es) {', '.join(empty)}; the dataset is too "
                "small for these fractions",
                DataWarning,
                stacklevel=3,
            )
    position = {p: i for i, p in enumerate(ds.paths)}  # dataset order: class, then natural file order
    for entries in splits.values():
        entries.sort(key=lambda e: position[e["path"]])
    picks = {name: [position[e["path"]] for e in entries] for name, entries in splits.items()}
    near = prep.near_duplicates
    return SplitManifest(
        dataset={
            "root": ds.source or ds.root,
            "classes": list(ds.classes),
            "n_files": len(ds) + len(ds.skipped),
            "synthetic": ds.synthetic,
        },
        preprocessing=_preprocessing(ds),
        seed=int(seed),
        fractions=list(fractions),
        splits=splits,
        dropped_duplicates=prep.dropped,
        near_duplicate_groups=len(near),
        near_duplicates={
            "method": NEAR_DUP_METHOD,
            "threshold": near_dup_threshold,
            "images_in_groups": sum(len(g) for g in near),
            "largest_group": max((len(g) for g in near), default=0),
        },
        skipped_unreadable=list(ds.skipped),
        grouping=prep.grouping,
        sentinel=leakage_sentinel(ds.subset(picks["train"]), ds.subset(picks["test"])),
        fold=fold,
    )


def make_split(
    dataset_or_path: ImageDataset | str | Path,
    *,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    image_size: int = 128,
    cache_dir: str | Path | None = None,
    progress: bool = False,
    near_dup_threshold: float = NEAR_DUP_THRESHOLD,
    grouping: str = "scan",
    scan_threshold: float = SCAN_LINK_THRESHOLD,
    window: str = DEFAULT_WINDOW,
) -> SplitManifest:
    """Stratified, group-aware, seeded split. Exact duplicates are dropped (one kept).

    `grouping="scan"` (default) keeps every reconstructed scan (run of similar consecutive slices,
    see fortify.data.groups) on one side; `"near-duplicate"` groups near-identical images only (the
    behaviour before scan grouping; it leaks neighbouring slices on IQ-OTH/NCCD); `"given"` keeps a
    dataset's own train/val/test folders (`fractions` then only size a val carved out of train when
    there is no val folder). DICOM files with patient/study/series tags are grouped by them whatever the
    choice. `window`: the DICOM display window (fortify.data.dicom), recorded in the manifest. The
    manifest stores the grouping and the leakage sentinel (fortify.data.sentinel)."""
    fr = _check_fractions(fractions)
    prep = _prepare(
        dataset_or_path,
        image_size=image_size,
        cache_dir=cache_dir,
        progress=progress,
        near_dup_threshold=near_dup_threshold,
        grouping=grouping,
        scan_threshold=scan_threshold,
        window=window,
    )
    rng = np.random.default_rng(seed)
    if grouping == GIVEN:
        prep, choice, fr = _given(prep, fr, rng)
    else:
        choice = _assign(prep.groups, prep.labels, len(prep.ds.classes), fr, rng)
    return _manifest(prep, choice, seed=seed, fractions=fr, near_dup_threshold=near_dup_threshold)


def _given(
    prep: _Prepared, fractions: tuple[float, ...], rng: np.random.Generator
) -> tuple[_Prepared, list[int], tuple[float, ...]]:
    """The dataset's own folders as the split (one group per folder), with val carved out of train
    (similarity/patient groups kept whole) when there is no val folder; records the folders' leaks."""
    ds = prep.ds
    given = [ds.given_splits[int(i)] for i in prep.kept]
    members = {s: [k for k, g in enumerate(given) if g == s] for s in SPLIT_NAMES}
    groups, choice = [members["train"], members["val"], members["test"]], [0, 1, 2]
    carved = not members["val"]
    if carved:
        in_train = set(members["train"])
        train_groups = [kept for g in prep.groups if (kept := [k for k in g if k in in_train])]
        v = fractions[1] / (fractions[0] + fractions[1])
        tv = _assign(train_groups, prep.labels, len(ds.classes), (1 - v, v), rng) if v > 0 else None
        if tv is not None:
            groups, choice = [*train_groups, members["test"]], [*tv, 2]
    position = {int(i): k for k, i in enumerate(prep.kept)}
    near = [[int(prep.kept[k]) for k in g] for g in prep.near_duplicates]
    exact = exact_duplicate_groups(dataset_pixel_hashes(ds))
    keys = [group_key(i.tags) for i in ds.infos] if ds.infos is not None else None
    leaks = split_leaks(ds.given_splits, ds.paths, exact, near, keys)
    line = split_leak_warning(leaks)
    if line:
        warnings.warn(line, DataWarning, stacklevel=3)
    info = {
        **prep.grouping,
        "requested": GIVEN,
        "applied": GIVEN,
        "similarity_grouping": prep.grouping.get("applied"),
        "val": "carved out of train, groups kept whole" if carved else "given",
        "leaks": leaks,
        "groups": len([g for g in groups if g]),
        "largest_group": max((len(g) for g in groups), default=0),
    }
    sizes = np.zeros(3)
    for g, s in zip(groups, choice, strict=True):
        sizes[s] += len(g)
    fr = tuple(round(float(x), 6) for x in sizes / max(1, len(position)))
    return replace(prep, groups=groups, grouping=info), choice, fr


def make_folds(
    dataset_or_path: ImageDataset | str | Path,
    k: int,
    *,
    seed: int = 0,
    val_fraction: float = 0.15,
    image_size: int = 128,
    cache_dir: str | Path | None = None,
    progress: bool = False,
    near_dup_threshold: float = NEAR_DUP_THRESHOLD,
    grouping: str = "scan",
    scan_threshold: float = SCAN_LINK_THRESHOLD,
    window: str = DEFAULT_WINDOW,
) -> list[SplitManifest]:
    """Grouped, class-stratified K-fold cross-validation: one manifest per fold.

    Groups (scans) are dealt to K folds with the same placement rule as `make_split` (every class
    split as evenly as the groups allow). Fold i's test set is fold i; of the remaining groups a
    `val_fraction` share (per class, group-aware) becomes validation, the rest training. No group is
    ever cut, every image is in exactly one test fold, and everything is deterministic in `seed`."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 2:
        raise ConfigError(f"cross-validation needs at least 2 folds, got {k!r}")
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"validation fraction must be in [0, 1), got {val_fraction}")
    if grouping == GIVEN:
        raise ConfigError(
            "cross-validation re-splits the data, so it cannot keep the given train/val/test folders; "
            "choose grouping scan or near-duplicate"
        )
    prep = _prepare(
        dataset_or_path,
        image_size=image_size,
        cache_dir=cache_dir,
        progress=progress,
        near_dup_threshold=near_dup_threshold,
        grouping=grouping,
        scan_threshold=scan_threshold,
        window=window,
    )
    if len(prep.groups) < k:
        raise ConfigError(f"{k} folds need at least {k} groups; the dataset has {len(prep.groups)}")
    n_classes = len(prep.ds.classes)
    rng = np.random.default_rng(seed)
    fold_of_group = _assign(prep.groups, prep.labels, n_classes, tuple([1.0 / k] * k), rng)
    manifests = []
    for i in range(k):
        rest = [g for g, f in enumerate(fold_of_group) if f != i]
        tv = (
            _assign(
                [prep.groups[g] for g in rest],
                prep.labels,
                n_classes,
                (1 - val_fraction, val_fraction),
                np.random.default_rng([seed, i]),
            )
            if val_fraction > 0
            else [0] * len(rest)
        )
        split_of_group = [2] * len(prep.groups)  # test unless assigned below
        for g, s in zip(rest, tv, strict=True):
            split_of_group[g] = s
        test_share = sum(len(prep.groups[g]) for g in range(len(prep.groups)) if fold_of_group[g] == i)
        share = test_share / len(prep.kept)
        fr = tuple(round(f, 6) for f in ((1 - share) * (1 - val_fraction), (1 - share) * val_fraction, share))
        manifests.append(
            _manifest(
                prep,
                split_of_group,
                seed=seed,
                fractions=fr,
                near_dup_threshold=near_dup_threshold,
                fold={"index": i, "k": k, "val_fraction": val_fraction},
            )
        )
    return manifests


def save_manifest(manifest: SplitManifest, path: str | Path) -> Path:
    return write_json(path, manifest.to_dict())


def load_manifest(path: str | Path) -> SplitManifest:
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"split manifest not found: {p}")
    try:
        raw = read_json(p)
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"split manifest {p} is not valid JSON ({getattr(e, 'detail', e)})") from e
    return SplitManifest.from_dict(raw)


def load_split(
    manifest: SplitManifest | str | Path,
    data: str | Path | None = None,
    *,
    image_size: int | None = None,
    limit_per_class: int | None = None,
    progress: bool = False,
    cache_dir: str | Path | None = None,
    window: str | None = None,
) -> dict[str, ImageDataset]:
    """Load the dataset and cut it into {"train", "val", "test"} as the manifest says.

    DICOM files are windowed as the manifest records (or `window`, when given).

    Every manifest file must exist with the same sha256 and label; otherwise DataError naming the
    first mismatch (the data changed since the split was made, so earlier results do not carry over).
    """
    m = manifest if isinstance(manifest, SplitManifest) else load_manifest(manifest)
    source = data if data is not None else m.dataset["root"]
    if data is None and not m.dataset.get("synthetic") and not Path(str(source)).expanduser().is_dir():
        raise DataError(
            f"the manifest's dataset folder {source} does not exist here; pass the dataset path (--data)"
        )
    size = int(image_size if image_size is not None else m.preprocessing.get("image_size", 128))
    win = window or m.preprocessing.get("window") or DEFAULT_WINDOW
    ds = load_dataset(source, image_size=size, cache_dir=cache_dir, progress=progress, window=win)
    if list(ds.classes) != list(m.dataset["classes"]):
        raise DataError(
            f"the split manifest is for classes {m.dataset['classes']} but the dataset at {source} "
            f"has {ds.classes}: it belongs to another dataset"
        )
    if limit_per_class is not None and limit_per_class < 1:
        raise ConfigError(f"limit per class must be >= 1, got {limit_per_class}")

    index = {p: i for i, p in enumerate(ds.paths)}
    skipped = {s["path"] for s in ds.skipped}
    out: dict[str, ImageDataset] = {}
    for name in SPLIT_NAMES:
        picks, per_class, groups = [], [0] * len(ds.classes), []
        for e in m.splits[name]:
            i = index.get(e["path"])
            if i is None:
                why = "is unreadable now" if e["path"] in skipped else "is missing"
                raise DataError(f"dataset changed since the split was made: {e['path']} {why}")
            if ds.file_hashes[i] != e["sha256"]:
                raise DataError(
                    f"dataset changed since the split was made: {e['path']} has different contents "
                    "(sha256 differs)"
                )
            if int(ds.labels[i]) != int(e["label"]):
                raise DataError(f"dataset changed since the split was made: {e['path']} has another label")
            if limit_per_class is not None:
                if per_class[e["label"]] >= limit_per_class:
                    continue
                per_class[e["label"]] += 1
            picks.append(i)
            groups.append(e.get("group"))
        part = ds.subset(picks)
        # Manifests written before groups were recorded: None (evaluation: one group per image).
        part.groups = [str(g) for g in groups] if all(g is not None for g in groups) else None
        out[name] = part
    return out
