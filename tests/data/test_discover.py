from pathlib import Path

import pytest

from fortify.data import clean_class_name, load_dataset
from fortify.data.discover import discover
from fortify.errors import DataError


@pytest.mark.parametrize(
    ("folder", "clean"),
    [
        ("Bengin cases", "benign"),
        ("Malignant cases", "malignant"),
        ("Normal cases", "normal"),
        ("Normal case", "normal"),
        ("COVID", "covid"),
        ("  Some   Class ", "some class"),
    ],
)
def test_clean_class_name(folder: str, clean: str) -> None:
    assert clean_class_name(folder) == clean


def test_discover_sorts_classes_ignores_non_images(make_folder) -> None:
    root = make_folder({"Normal cases": 2, "Bengin cases": 2, "Malignant cases": 3})
    (root / "README.txt").write_text("not an image")
    (root / "Normal cases" / "notes.txt").write_text("not an image")
    (root / "Normal cases" / ".hidden.png").write_bytes(b"x")
    (root / ".git").mkdir()
    found = discover(root)
    assert found.classes == ["benign", "malignant", "normal"]
    assert [label for _, label in found.files] == [0, 0, 1, 1, 1, 2, 2]
    assert all(p.endswith(".png") for p, _ in found.files)
    assert found.files[0][0] == "Bengin cases/img (1).png"


def test_natural_file_order(make_folder) -> None:
    root = make_folder({"a": 11, "b": 1})
    names = [p for p, _ in discover(root).files]
    assert names[:3] == ["a/img (1).png", "a/img (2).png", "a/img (3).png"]
    assert names[10] == "a/img (11).png"


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "nope")


def test_path_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "x.jpg"
    f.write_bytes(b"1")
    with pytest.raises(DataError, match="not a folder"):
        load_dataset(f)


def test_no_class_subfolders(tmp_path: Path, make_folder) -> None:
    root = make_folder({"a": 2, "b": 2})
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in root.rglob("*.png"):
        (flat / f"{p.parent.name}-{p.name}").write_bytes(p.read_bytes())
    with pytest.raises(DataError, match="no class subfolders.*4 images lie directly"):
        load_dataset(flat)


def test_single_class(make_folder) -> None:
    with pytest.raises(DataError, match="only one class"):
        load_dataset(make_folder({"Normal cases": 3}))


def test_empty_class(make_folder) -> None:
    root = make_folder({"a": 2, "b": 2})
    (root / "c").mkdir()
    (root / "c" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match="'c' has no images"):
        load_dataset(root)


def test_two_folders_same_class(make_folder) -> None:
    root = make_folder({"Normal cases": 1, "normal": 1, "b": 1})
    with pytest.raises(DataError, match="both mean class 'normal'"):
        load_dataset(root)
