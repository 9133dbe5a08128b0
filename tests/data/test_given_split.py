"""Predefined splits: ROOT/{train, val|validation, test}/<class>/ is recognised, `grouping="given"` keeps
it, and the audit flags images shared across the folders (a common leak in public datasets)."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fortify.data import DataWarning, audit_dataset, load_split, make_folds, make_split
from fortify.data.discover import discover
from fortify.errors import ConfigError, DataError


@pytest.fixture
def given_root(tmp_path: Path, img) -> Path:
    """train: 4 per class, validation: 2 per class, test: 2 per class; every image random noise."""
    root = tmp_path / "given"
    counts = {"train": 4, "validation": 2, "test": 2}
    for s, (split, n) in enumerate(counts.items()):
        for c, folder in enumerate(("Benign", "Malignant")):
            for i in range(n):
                rng = np.random.default_rng([s, c, i])
                img.write_image(root / split / folder / f"img ({i + 1}).png", img.random_gray(rng))
    return root


def _kw(tmp_path: Path) -> dict:
    return {"image_size": 16, "cache_dir": tmp_path / "cache"}


def test_layout_is_recognised(given_root: Path) -> None:
    found = discover(given_root)
    assert found.classes == ["benign", "malignant"]
    assert found.files[0] == ("train/Benign/img (1).png", 0)
    assert found.given_splits.count("train") == 8 and found.given_splits.count("val") == 4
    assert all(
        p.split("/")[0] == {"val": "validation"}.get(s, s)
        for (p, _), s in zip(found.files, found.given_splits, strict=True)
    )


def test_given_split_keeps_the_folders_and_finds_no_leak(given_root: Path, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # a clean dataset: no leak warning
        report = audit_dataset(given_root, **_kw(tmp_path))
        m = make_split(given_root, grouping="given", **_kw(tmp_path))
    leaks = report["given_splits"]["leaks"]
    assert leaks["exact"]["n_groups"] == 0 and leaks["near"]["n_groups"] == 0
    assert report["given_splits"]["counts"]["val"] == {"benign": 2, "malignant": 2}
    assert not any("leak" in w for w in report["warnings"])
    for name, folder in (("train", "train"), ("val", "validation"), ("test", "test")):
        assert {e["path"].split("/")[0] for e in m.splits[name]} == {folder}
    assert m.counts()["train"] == {"benign": 4, "malignant": 4}
    assert m.grouping["applied"] == "given" and m.grouping["val"] == "given"
    assert m.fractions == [0.5, 0.25, 0.25]
    parts = load_split(m, **_kw(tmp_path))
    assert len(parts["test"]) == 4


def test_planted_cross_split_duplicates_are_flagged(given_root: Path, tmp_path: Path, img) -> None:
    # An exact copy of a training image in test, and a slightly changed one in validation.
    shutil.copy(given_root / "train/Benign/img (1).png", given_root / "test/Benign/copy.png")
    base = np.asarray(Image.open(given_root / "train/Benign/img (4).png"), dtype=int)
    near = np.clip(base + np.where(np.arange(base.size).reshape(base.shape) % 2, 3, -3), 0, 255)
    img.write_image(given_root / "validation/Benign/near.png", near.astype(np.uint8))

    report = audit_dataset(given_root, **_kw(tmp_path))
    leaks = report["given_splits"]["leaks"]
    assert leaks["exact"]["n_groups"] == 1
    assert leaks["exact"]["groups"][0] == {
        "paths": ["train/Benign/img (1).png", "test/Benign/copy.png"],
        "splits": ["test", "train"],
        "example": ["train/Benign/img (1).png", "test/Benign/copy.png"],
        "images": 2,
    }
    assert "patient" not in leaks  # no DICOM tags
    assert leaks["near"]["n_groups"] == 1
    assert set(leaks["near"]["groups"][0]["paths"]) == {
        "train/Benign/img (4).png",
        "validation/Benign/near.png",
    }
    assert any(w.startswith("the predefined split folders leak") for w in report["warnings"])

    with pytest.warns(DataWarning, match="predefined split folders leak"):
        m = make_split(given_root, grouping="given", **_kw(tmp_path))
    assert m.grouping["leaks"]["exact"]["n_groups"] == 1
    # The test copy of a training image is dropped (as every exact duplicate is), not tested on.
    assert {
        "path": "test/Benign/copy.png",
        "duplicate_of": "train/Benign/img (1).png",
    } in m.dropped_duplicates
    assert "test/Benign/copy.png" not in {e["path"] for e in m.splits["test"]}


def test_missing_val_is_carved_out_of_train(given_root: Path, tmp_path: Path) -> None:
    shutil.rmtree(given_root / "validation")
    m = make_split(given_root, grouping="given", fractions=(0.5, 0.25, 0.25), **_kw(tmp_path))
    assert m.grouping["val"].startswith("carved out of train")
    assert {e["path"].split("/")[0] for e in m.splits["val"]} == {"train"}
    assert {e["path"].split("/")[0] for e in m.splits["test"]} == {"test"} and len(m.splits["test"]) == 4
    assert m.counts()["val"] == {"benign": 1, "malignant": 1}  # 1/3 of train's 4 per class, rounded


def test_default_grouping_resplits_a_given_layout(given_root: Path, tmp_path: Path) -> None:
    m = make_split(given_root, seed=0, **_kw(tmp_path))
    assert m.grouping["applied"] != "given"
    assert sum(len(v) for v in m.splits.values()) == 16


def test_given_needs_the_layout_and_no_folds(make_folder, given_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs a dataset root of train/"):
        make_split(make_folder({"a": 3, "b": 3}), grouping="given", **_kw(tmp_path))
    with pytest.raises(ConfigError, match="cannot keep the given"):
        make_folds(given_root, 2, grouping="given", **_kw(tmp_path))
    with pytest.raises(
        ConfigError, match="unknown grouping 'patient'; choose one of scan, near-duplicate, given"
    ):
        make_split(given_root, grouping="patient", **_kw(tmp_path))


def test_layout_errors(given_root: Path, img) -> None:
    (given_root / "extras").mkdir()
    with pytest.raises(DataError, match=r"holds train/ and test/ beside other folders \(extras\)"):
        discover(given_root)
    (given_root / "extras").rmdir()
    img.write_image(given_root / "test" / "Other" / "x.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match="'Other' in test/ has no counterpart in train/"):
        discover(given_root)
    shutil.rmtree(given_root / "test")
    with pytest.raises(DataError, match="no test/ folder"):
        discover(given_root)
