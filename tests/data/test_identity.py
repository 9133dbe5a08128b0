"""The dataset identification the report relies on to show (or leave out) the study's Table 1 rows."""

from __future__ import annotations

import pytest

from fortify.data import audit_dataset
from fortify.data.identity import IQOTHNCCD, identify_dataset


def files(folders: tuple[str, str, str], counts=(120, 561, 416), split: str = "") -> list[str]:
    return [
        f"{split}{f}/{f.split()[0]} ({i}).jpg" for f, n in zip(folders, counts, strict=True) for i in range(n)
    ]


@pytest.mark.parametrize("benign", ["Bengin cases", "Benign cases", "benign  cases"])
def test_iqothnccd_by_its_folders_and_count(benign: str) -> None:
    ident = identify_dataset(files((benign, "Malignant cases", "Normal cases")), 1097, False)
    assert ident["name"] == IQOTHNCCD and "1,097" in ident["reason"]
    given = files((benign, "Malignant cases", "Normal cases"), split="train/")  # the same in split folders
    assert identify_dataset(given, 1097, False)["name"] == IQOTHNCCD


def test_anything_else_is_not() -> None:
    renamed = identify_dataset(files(("Benign", "Malignant", "Normal")), 1097, False)
    assert renamed["name"] is None and "are not IQ-OTH/NCCD's" in renamed["reason"]
    fewer = identify_dataset(
        files(("Bengin cases", "Malignant cases", "Normal cases"), (100, 561, 416)), 1077, False
    )
    assert fewer["name"] is None and "1,077 files, not 1,097" in fewer["reason"]
    two = identify_dataset(files(("Bengin cases", "Malignant cases", "Malignant cases")), 1097, False)
    assert two["name"] is None
    assert identify_dataset(files(("Bengin cases", "Malignant cases", "Normal cases")), 1097, True) == {
        "name": None,
        "reason": "synthetic phantom data",
    }


def test_audit_records_the_identity(make_folder, tmp_path) -> None:
    assert audit_dataset("phantom:n=4", image_size=16)["dataset"]["identity"]["name"] is None
    root = make_folder({"Bengin cases": 3, "Malignant cases": 3, "Normal cases": 3})
    ident = audit_dataset(root, image_size=16, cache_dir=tmp_path / "c")["dataset"]["identity"]
    assert ident["name"] is None and "9 files, not 1,097" in ident["reason"]
