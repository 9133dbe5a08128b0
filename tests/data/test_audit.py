import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fortify.data import DataWarning, audit_dataset, load_dataset
from fortify.data.audit import _auc


def test_auc_matches_pairwise_definition() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=40).astype(float)  # many ties
    pos = rng.random(40) < 0.4
    pairs = [(a > b) + 0.5 * (a == b) for a in scores[pos] for b in scores[~pos]]
    assert _auc(scores, pos) == pytest.approx(np.mean(pairs))
    assert _auc(np.arange(6.0), np.array([0, 0, 0, 1, 1, 1], bool)) == 1.0


@pytest.fixture
def audited_folder(tmp_path: Path) -> Path:
    """Class a: 6 images 40x30 (a size no other class has) + a pixel duplicate.
    Class b: 12 images 30x30 + one broken file."""
    root = tmp_path / "ds"
    for c, size in (("a", (30, 40)), ("b", (30, 30))):
        (root / c).mkdir(parents=True)
        for i in range(6):
            px = np.random.default_rng([ord(c), i]).integers(0, 256, size=size, dtype=np.uint8)
            Image.fromarray(px).save(root / c / f"{i}.png")
    (root / "a" / "dup.png").write_bytes((root / "a" / "2.png").read_bytes())
    for i in range(6, 12):  # more b images so a single bad file is "a few among many"
        px = np.random.default_rng([98, i]).integers(0, 256, size=(30, 30), dtype=np.uint8)
        Image.fromarray(px).save(root / "b" / f"{i}.png")
    (root / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return root


def test_audit_report(audited_folder: Path, tmp_path: Path) -> None:
    with pytest.warns(DataWarning, match="skipped 1 unreadable"):
        r = audit_dataset(audited_folder, image_size=16, cache_dir=tmp_path / "c")
    json.dumps(r)  # JSON-ready
    assert r["dataset"]["synthetic"] is False
    assert r["counts"] == {"a": 7, "b": 12}
    assert r["dataset"]["n_files"] == 20 and r["dataset"]["n_images"] == 19
    assert r["sizes"] == {"a": {"40x30": 7}, "b": {"30x30": 12}}
    assert r["unreadable"][0]["path"] == "b/broken.png"
    ex = r["exact_duplicates"]
    assert (ex["n_groups"], ex["n_pairs"], ex["cross_class_groups"]) == (1, 1, 0)
    assert ex["groups"][0]["paths"] == ["a/2.png", "a/dup.png"]
    assert r["near_duplicates"]["n_groups"] == 0  # random images are not near-duplicates
    flagged = [s for s in r["shortcuts"]["exclusive_values"] if s["flagged"]]
    assert {(s["value"], s["class"]) for s in flagged} == {("40x30", "a"), ("30x30", "b")}
    assert any("shortcut: image size 40x30" in w for w in r["warnings"])


def test_audit_flags_intensity_shortcut(tmp_path: Path) -> None:
    root = tmp_path / "bright"
    for c, level in (("dark", 40), ("light", 200)):
        (root / c).mkdir(parents=True)
        for i in range(8):
            px = (
                np.random.default_rng([level, i])
                .normal(level, 10, size=(16, 16))
                .clip(0, 255)
                .astype(np.uint8)
            )
            Image.fromarray(px).save(root / c / f"{i}.png")
    r = audit_dataset(root, image_size=16, cache_dir=tmp_path / "c")
    mean = next(s for s in r["shortcuts"]["single_property_auc"] if s["property"] == "mean intensity")
    assert mean["flagged"] and mean["auc"] == 1.0
    assert any("mean intensity separates" in w for w in r["warnings"])


def test_audit_no_false_shortcut_on_phantom() -> None:
    r = audit_dataset("phantom:n=30", image_size=32)
    assert r["dataset"]["synthetic"] and "synthetic" in r["warnings"][0]
    assert not [s for s in r["shortcuts"]["exclusive_values"] if s["flagged"]]
    assert r["exact_duplicates"]["n_groups"] == 0


def test_audit_accepts_a_loaded_dataset(audited_folder: Path, tmp_path: Path) -> None:
    with pytest.warns(DataWarning):
        ds = load_dataset(audited_folder, image_size=16, cache_dir=tmp_path / "c")
    r = audit_dataset(ds)
    assert r["counts"] == {"a": 7, "b": 12}


def _mixed_inputs(root: Path) -> Path:
    """64x96 colour images in TIFF, PNG (with alpha) and BMP, names without numbers."""
    rng = np.random.default_rng(0)
    for c in ("benign", "malignant", "normal"):
        (root / c).mkdir(parents=True)
        for i, name in enumerate("abcdef"):
            im = Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8), "RGB")
            if i % 3 == 0:
                im.save(root / c / f"img{name}.tif")
            elif i % 3 == 1:
                im.convert("RGBA").save(root / c / f"img{name}.png")
            else:
                im.save(root / c / f"img{name}.bmp")
    return root


def test_audit_records_formats_conversions_and_upscaling(tmp_path: Path) -> None:
    inputs = audit_dataset(_mixed_inputs(tmp_path / "d"), image_size=128)["inputs"]
    assert inputs["formats"] == {".tif": 6, ".png": 6, ".bmp": 6}
    assert inputs["converted_to_gray"] == {"RGB": 12, "RGBA": 6}
    assert inputs["upscaled"] == {"n": 18, "image_size": 128, "smallest": "96x64"}
    at_size = audit_dataset(tmp_path / "d", image_size=64)["inputs"]["upscaled"]
    assert at_size["n"] == 0 and at_size["smallest"] is None
