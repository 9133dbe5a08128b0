import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fortify.data import (
    DataWarning,
    SplitManifest,
    load_dataset,
    load_manifest,
    load_split,
    make_folds,
    make_split,
    save_manifest,
)
from fortify.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")


def _where(manifest: SplitManifest) -> dict[str, str]:
    return {e["path"]: name for name in SPLITS for e in manifest.splits[name]}


@pytest.fixture
def leaky_folder(tmp_path: Path) -> Path:
    """Two classes of 20 random images, plus one pixel-identical copy (other PNG bytes) and a
    5-image near-duplicate group (one base image + faint noise) in class a."""
    root = tmp_path / "leaky"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(20):
            px = np.random.default_rng([ord(c), i]).integers(0, 256, size=(32, 32), dtype=np.uint8)
            Image.fromarray(px).save(root / c / f"{c}{i:02d}.png")
    with Image.open(root / "a" / "a03.png") as img:
        base = np.asarray(img)
    Image.fromarray(base).save(
        root / "a" / "zz_copy_of_a03.png", compress_level=1
    )  # other bytes, same pixels
    for k in range(4):
        noise = np.random.default_rng(100 + k).integers(-2, 3, size=base.shape)
        Image.fromarray(np.clip(base.astype(int) + noise, 0, 255).astype(np.uint8)).save(
            root / "a" / f"near{k}.png"
        )
    return root


def test_exact_duplicates_dropped_by_pixels(leaky_folder: Path, tmp_path: Path) -> None:
    assert (leaky_folder / "a/a03.png").read_bytes() != (leaky_folder / "a/zz_copy_of_a03.png").read_bytes()
    m = make_split(leaky_folder, seed=0, image_size=16, cache_dir=tmp_path / "c")
    assert m.dropped_duplicates == [{"path": "a/zz_copy_of_a03.png", "duplicate_of": "a/a03.png"}]
    where = _where(m)
    assert "a/zz_copy_of_a03.png" not in where and "a/a03.png" in where
    assert sum(len(v) for v in m.splits.values()) == 44  # 45 files - 1 duplicate


@pytest.mark.parametrize("seed", range(4))
def test_near_duplicate_group_stays_in_one_split(leaky_folder: Path, tmp_path: Path, seed: int) -> None:
    m = make_split(leaky_folder, seed=seed, image_size=16, cache_dir=tmp_path / "c")
    assert m.near_duplicate_groups == 1
    where = _where(m)
    group = ["a/a03.png"] + [f"a/near{k}.png" for k in range(4)]
    assert len({where[p] for p in group}) == 1


def test_class_proportions_within_one_image() -> None:
    ds = load_dataset("phantom:n=37", image_size=16)
    for fractions in ((0.7, 0.15, 0.15), (0.6, 0.2, 0.2), (0.8, 0.2, 0.0)):
        m = make_split(ds, seed=1, fractions=fractions)
        for name, frac in zip(SPLITS, fractions, strict=True):
            for cls, count in m.counts()[name].items():
                assert abs(count - frac * 37) <= 1, (fractions, name, cls, count)


def test_seed_determinism(leaky_folder: Path, tmp_path: Path) -> None:
    a = make_split(leaky_folder, seed=5, image_size=16, cache_dir=tmp_path / "c")
    b = make_split(leaky_folder, seed=5, image_size=16, cache_dir=tmp_path / "c")
    c = make_split(leaky_folder, seed=6, image_size=16, cache_dir=tmp_path / "c")
    assert a.to_dict() == b.to_dict()
    assert a.splits != c.splits


def test_manifest_format(leaky_folder: Path, tmp_path: Path) -> None:
    m = make_split(leaky_folder, seed=0, image_size=16, cache_dir=tmp_path / "c")
    path = save_manifest(m, tmp_path / "out" / "split.json")
    raw = json.loads(path.read_text())
    assert raw["format"] == "fortify-split/1" and raw["seed"] == 0
    assert raw["dataset"]["classes"] == ["a", "b"] and raw["dataset"]["n_files"] == 45
    assert raw["preprocessing"] == {"image_size": 16, "grayscale": True, "crop": "center-square"}
    entry = raw["splits"]["train"][0]
    assert set(entry) == {"path", "label", "sha256", "group"} and not Path(entry["path"]).is_absolute()
    assert len(entry["sha256"]) == 64
    assert load_manifest(path).to_dict() == m.to_dict()


def test_groups_have_stable_ids_on_one_side_in_the_split_and_every_fold(leaky_folder: Path, tmp_path: Path):
    m = make_split(leaky_folder, seed=0, image_size=16, cache_dir=tmp_path / "c")
    folds = make_folds(leaky_folder, 3, seed=0, image_size=16, cache_dir=tmp_path / "c")
    group_of = {}
    for manifest in (m, *folds):
        side: dict[str, set[str]] = {}
        for name, entries in manifest.splits.items():
            for e in entries:
                side.setdefault(e["group"], set()).add(name)
                assert group_of.setdefault(e["path"], e["group"]) == e["group"]  # the same id everywhere
        assert all(len(s) == 1 for s in side.values())
    assert all(g.split("/")[0] in ("a", "b") and ("/scan-" in g or "/group-" in g) for g in group_of.values())
    tested = [g for f in folds for g in {e["group"] for e in f.splits["test"]}]
    assert sorted(tested) == sorted(set(group_of.values()))  # each patient tested in exactly one fold
    test = load_split(m, leaky_folder, image_size=16, cache_dir=tmp_path / "c")["test"]
    assert test.groups == [group_of[p] for p in test.paths]


def test_load_split_round_trip_and_limit(leaky_folder: Path, tmp_path: Path) -> None:
    cache = tmp_path / "c"
    m = make_split(leaky_folder, seed=0, image_size=16, cache_dir=cache)
    save_manifest(m, tmp_path / "split.json")
    parts = load_split(tmp_path / "split.json", cache_dir=cache)  # data defaults to the manifest's root
    full = load_dataset(leaky_folder, image_size=16, cache_dir=cache)
    for name in SPLITS:
        assert parts[name].paths == [e["path"] for e in m.splits[name]]
        assert parts[name].labels.tolist() == [e["label"] for e in m.splits[name]]
        i = full.paths.index(parts[name].paths[0])
        assert torch.equal(parts[name].images[0], full.images[i])
    bigger = load_split(m, leaky_folder, image_size=24, cache_dir=cache)
    assert bigger["train"].images.shape[-1] == 24
    small = load_split(m, leaky_folder, limit_per_class=2, cache_dir=cache)
    for name in SPLITS:
        assert small[name].class_counts() == {"a": 2, "b": 2}


def test_load_split_phantom() -> None:
    m = make_split("phantom:n=10", seed=0, image_size=16)
    parts = load_split(m)
    assert all(p.synthetic for p in parts.values())
    assert sum(len(p) for p in parts.values()) == 30


def test_load_split_detects_changed_file(leaky_folder: Path, tmp_path: Path) -> None:
    m = make_split(leaky_folder, seed=0, image_size=16, cache_dir=tmp_path / "c")
    victim = m.splits["val"][0]["path"]
    px = np.zeros((32, 32), np.uint8)
    Image.fromarray(px).save(leaky_folder / victim)
    with pytest.raises(DataError, match=f"{victim} has different contents"):
        load_split(m, cache_dir=tmp_path / "c")


def test_load_split_detects_missing_file(leaky_folder: Path, tmp_path: Path) -> None:
    m = make_split(leaky_folder, seed=0, image_size=16, cache_dir=tmp_path / "c")
    victim = m.splits["test"][-1]["path"]
    (leaky_folder / victim).unlink()
    with pytest.raises(DataError, match=f"{victim} is missing"):
        load_split(m, cache_dir=tmp_path / "c")


def test_load_split_other_dataset(leaky_folder: Path, tmp_path: Path) -> None:
    m = make_split("phantom:n=5", seed=0, image_size=16)
    with pytest.raises(DataError, match="another dataset"):
        load_split(m, leaky_folder, cache_dir=tmp_path / "c")


def test_bad_manifest_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_manifest(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_manifest(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"format": "something-else"}')
    with pytest.raises(DataError, match="not a fortify split manifest"):
        load_manifest(tmp_path / "other.json")
    (tmp_path / "partial.json").write_text('{"format": "fortify-split/1", "dataset": [], "splits": {}}')
    with pytest.raises(DataError, match="incomplete"):
        load_manifest(tmp_path / "partial.json")


@pytest.mark.parametrize("fractions", [(0.5, 0.5), (0.8, 0.3, 0.1), (0.0, 0.5, 0.5), (1.2, -0.1, -0.1)])
def test_bad_fractions(fractions) -> None:
    with pytest.raises(ConfigError, match="fractions"):
        make_split("phantom:n=3", fractions=fractions, image_size=16)


def test_tiny_dataset_warns_about_empty_split() -> None:
    with pytest.warns(DataWarning, match="split 'test' has no images"):
        make_split("phantom:n=3", seed=0, image_size=16)


def test_manifest_root_gone_asks_for_data(leaky_folder: Path, tmp_path: Path) -> None:
    m = make_split(leaky_folder, seed=0, image_size=16, cache_dir=tmp_path / "c")
    m.dataset["root"] = str(tmp_path / "moved-away")
    with pytest.raises(DataError, match="pass the dataset path"):
        load_split(m, cache_dir=tmp_path / "c")
    assert len(load_split(m, leaky_folder, cache_dir=tmp_path / "c")["train"]) > 0  # explicit data works


def test_bad_near_duplicate_threshold() -> None:
    with pytest.raises(ConfigError, match="threshold"):
        make_split("phantom:n=3", image_size=16, near_dup_threshold=-1)


def test_split_membership_does_not_depend_on_image_size(leaky_folder: Path, tmp_path: Path) -> None:
    # Duplicates use original pixels and near-duplicates use fixed-size fingerprints, so training at
    # 224 px and evaluating at 128 px with a re-made split still see the same partition.
    a = make_split(leaky_folder, seed=2, image_size=16, cache_dir=tmp_path / "c")
    b = make_split(leaky_folder, seed=2, image_size=32, cache_dir=tmp_path / "c")
    assert a.splits == b.splits and a.preprocessing != b.preprocessing
