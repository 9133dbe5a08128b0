"""Scan grouping, K folds and the leakage sentinel on hand-built datasets with a known answer."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from fortify.data import ImageDataset, make_folds, make_split
from fortify.data.groups import SCAN_LINK_THRESHOLD, GroupingWarning, file_number, leakage_groups
from fortify.data.sentinel import leakage_sentinel, sentinel_warning
from fortify.errors import ConfigError

SPLITS = ("train", "val", "test")


def _scans_dataset(n_scans: int = 8, slices: int = 5, classes: int = 2, seed: int = 0) -> ImageDataset:
    """`n_scans` scans per class of `slices` consecutive slices each: within a scan every slice is its
    neighbour plus a drift of ~5.6 grey levels (above the near-duplicate threshold of 4, below the
    scan link threshold of 12: linked only by scan grouping), between scans the anatomy changes (cut).
    File numbers run on across scans within a class, as in IQ-OTH/NCCD."""
    rng = np.random.default_rng(seed)
    images, labels, paths = [], [], []
    for c in range(classes):
        number = 1
        for _ in range(n_scans):
            base = rng.integers(40, 215, size=(16, 16)).astype(np.float64)
            for _ in range(slices):
                base = np.clip(base + rng.normal(0, 7.0, size=base.shape), 0, 255)  # MAD ~5.6
                images.append(np.round(base).astype(np.uint8))
                labels.append(c)
                paths.append(f"class{c}/slice ({number}).png")
                number += 1
    imgs = torch.from_numpy(np.stack(images)).unsqueeze(1)
    return ImageDataset(
        images=imgs,
        labels=torch.tensor(labels),
        classes=[f"class{c}" for c in range(classes)],
        paths=paths,
        file_hashes=[f"h{i}" for i in range(len(paths))],
        root=None,
        image_size=16,
        synthetic=True,
        fingerprints=imgs.flatten(1).clone(),
    )


def _scan_of(path: str, slices: int = 5) -> tuple[str, int]:
    return path.split("/")[0], (file_number(path) - 1) // slices


def test_file_number_is_the_last_number_of_the_stem() -> None:
    assert file_number("Bengin cases/Bengin case (12).jpg") == 12
    assert file_number("a/scan2_slice_007.png") == 7
    assert file_number("a/nonumber.png") is None


def test_scan_runs_follow_consecutive_similar_slices() -> None:
    ds = _scans_dataset()
    g = leakage_groups(ds.fingerprints, ds.labels.tolist(), ds.paths, ds.classes)
    assert g.info["applied"] == "scan"
    assert g.info["scan"]["runs_per_class"] == {"class0": 8, "class1": 8}
    scans = sorted(sorted(_scan_of(ds.paths[i]) for i in grp) for grp in g.groups)
    # every group is exactly one scan, every scan exactly one group
    assert all(len(set(s)) == 1 and len(s) == 5 for s in scans)
    assert len(scans) == 16 and sorted(i for grp in g.groups for i in grp) == list(range(len(ds)))


def test_threshold_zero_cuts_every_slice_and_near_duplicate_grouping_ignores_order() -> None:
    ds = _scans_dataset()
    g0 = leakage_groups(ds.fingerprints, ds.labels.tolist(), ds.paths, ds.classes, scan_threshold=0.0)
    assert g0.info["scan"]["runs_per_class"] == {"class0": 40, "class1": 40}
    nd = leakage_groups(ds.fingerprints, ds.labels.tolist(), ds.paths, ds.classes, grouping="near-duplicate")
    assert nd.info["applied"] == "near-duplicate" and "scan" not in nd.info
    with pytest.raises(ConfigError, match="unknown grouping"):
        leakage_groups(ds.fingerprints, ds.labels.tolist(), ds.paths, ds.classes, grouping="patient")


def test_names_without_numbers_fall_back_with_a_warning() -> None:
    ds = _scans_dataset()
    paths = [p.replace(" (", "_").replace(").png", "x.png").replace("0", "o") for p in ds.paths]
    paths = [f"{p.split('/')[0]}/img{chr(97 + i % 26)}{chr(97 + i // 26)}.png" for i, p in enumerate(paths)]
    with pytest.warns(GroupingWarning, match="no slice numbers"):
        g = leakage_groups(ds.fingerprints, ds.labels.tolist(), paths, ds.classes)
    assert g.info["applied"] == "near-duplicate" and "fallback" in g.info


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_never_cuts_a_scan(seed: int) -> None:
    ds = _scans_dataset()
    m = make_split(ds, seed=seed, fractions=(0.5, 0.25, 0.25))
    side = {}
    for name in SPLITS:
        for e in m.splits[name]:
            side.setdefault(_scan_of(e["path"]), set()).add(name)
    assert len(side) == 16 and all(len(v) == 1 for v in side.values())
    assert m.grouping["applied"] == "scan" and m.sentinel["n_test"] == len(m.splits["test"])


def test_old_grouping_cuts_scans_and_the_sentinel_sees_it() -> None:
    ds = _scans_dataset(n_scans=6, slices=8)
    old = make_split(ds, seed=0, grouping="near-duplicate")
    new = make_split(ds, seed=0)
    cut = {}
    for name in SPLITS:
        for e in old.splits[name]:
            cut.setdefault(_scan_of(e["path"], 8), set()).add(name)
    assert any(len(v) > 1 for v in cut.values()), "slices were meant to differ beyond near-duplicates"
    # Scans cut in two: the nearest training image of a test slice is its neighbour slice.
    assert old.sentinel["neighbour_share"] > 0.5 and old.sentinel["accuracy"] == 1.0
    assert new.sentinel["neighbour_share"] == 0.0


def test_folds_cover_every_image_once_and_keep_scans_whole() -> None:
    ds = _scans_dataset(n_scans=9)
    folds = make_folds(ds, 3, seed=0, val_fraction=0.2)
    assert [m.fold["index"] for m in folds] == [0, 1, 2] and all(m.fold["k"] == 3 for m in folds)
    tested = [e["path"] for m in folds for e in m.splits["test"]]
    assert sorted(tested) == sorted(ds.paths)  # each image in exactly one test fold
    for m in folds:
        side = {}
        for name in SPLITS:
            for e in m.splits[name]:
                side.setdefault(_scan_of(e["path"]), set()).add(name)
        assert all(len(v) == 1 for v in side.values())
        counts = m.counts()
        assert counts["test"] == {"class0": 15, "class1": 15}  # 3 of 9 scans per class
        assert all(counts["val"][c] > 0 for c in ds.classes)
    again = make_folds(ds, 3, seed=0, val_fraction=0.2)
    assert [m.splits for m in again] == [m.splits for m in folds]
    other = make_folds(ds, 3, seed=1, val_fraction=0.2)
    assert [m.splits for m in other] != [m.splits for m in folds]


def test_folds_reject_bad_k() -> None:
    ds = _scans_dataset(n_scans=2)
    for k in (1, 0, True):
        with pytest.raises(ConfigError):
            make_folds(ds, k)
    with pytest.raises(ConfigError, match="groups"):
        make_folds(ds, 5)


def test_sentinel_known_answers() -> None:
    ds = _scans_dataset(n_scans=4, slices=1)
    train = ds.subset([0, 1, 2, 3, 4, 5, 6, 7])
    copy = ds.subset([1, 5])  # exact copies of training images: 1-NN must get both right
    s = leakage_sentinel(train, copy)
    assert s["accuracy"] == 1.0 and s["correct"] == 2 and s["neighbour_share"] == 1.0
    lo, hi = s["accuracy_ci"]
    assert 0.3 < lo < 0.4 and hi == pytest.approx(1.0)  # Wilson 95% for 2/2: [0.342, 1]
    assert "LEAKAGE" in sentinel_warning(s, 0.9)
    assert "LEAKAGE" in sentinel_warning(s, 1.04)  # within 5 points
    assert sentinel_warning({**s, "accuracy": 0.6}, 0.9) is None
    assert "trails" not in sentinel_warning(s, 0.9)  # no per-class recalls given: none named


def test_sentinel_warning_names_the_classes_where_the_model_trails() -> None:
    s = {"accuracy": 0.764, "per_class_recall": {"benign": 0.143, "malignant": 0.936, "normal": 0.691}}
    line = sentinel_warning(s, 0.759, {"benign": 0.0, "malignant": 1.0, "normal": 0.63, "other": None})
    assert line.startswith("LEAKAGE SUSPECTED")
    assert line.endswith("per class the model trails it on benign 0.0% vs 14.3%, normal 63.0% vs 69.1%")
    assert "malignant" not in line  # the model beats the sentinel there
    assert sentinel_warning(s, 0.9, {"benign": 0.0}) is None  # clear margin overall: no warning at all


def test_sentinel_threshold_is_documented_value() -> None:
    assert SCAN_LINK_THRESHOLD == 12.0  # the calibrated value audit reports; change both together
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_split(_scans_dataset(), seed=0)  # numbered files: no fallback warning
