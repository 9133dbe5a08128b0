"""Patients in the split manifest: DICOM PatientIDs as groups, counted right, on one side, aggregated
over the right ids; mixed-label groups reported by the audit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fortify.data import audit_dataset, load_split, make_split
from fortify.data.group_ids import _key_value
from fortify.evaluation.patients import Patients, aggregate, patient_labels, patient_metrics

pytest.importorskip("pydicom")
from test_dicom import noise_slice, write_dicom  # noqa: E402

CLASSES = ["benign", "malignant"]


def _patients(root: Path, slices: dict[str, int]) -> dict[str, str]:
    """Patients P<c><p> with `slices[patient]` dissimilar slices each, numbered across patients so that
    only the tags tell where one ends. Returns path -> PatientID."""
    owner, n = {}, 0
    for patient, count in slices.items():
        folder = "Benign cases" if patient[1] == "0" else "Malignant cases"
        for _ in range(count):
            n += 1
            rel = f"{folder}/IM {n}.dcm"
            write_dicom(root / rel, noise_slice(n), patient=patient)
            owner[rel] = patient
    return owner


SLICES = {"P00": 3, "P01": 2, "P02": 4, "P03": 1, "P10": 2, "P11": 5, "P12": 3, "P13": 2}


@pytest.mark.parametrize("seed", [0, 3])
def test_patients_counted_right_and_never_on_two_sides(tmp_path: Path, seed: int) -> None:
    owner = _patients(tmp_path / "ds", SLICES)
    m = make_split(
        tmp_path / "ds", seed=seed, fractions=(0.5, 0.25, 0.25), image_size=16, cache_dir=tmp_path / "c"
    )
    side: dict[str, set[str]] = {}
    for name, entries in m.splits.items():
        for e in entries:
            assert e["group"] == _key_value(f"PatientID={owner[e['path']]}")
            side.setdefault(e["group"], set()).add(name)
    assert len(side) == len(SLICES) and all(len(s) == 1 for s in side.values())
    assert all(e["group"].startswith("patient-") for es in m.splits.values() for e in es)
    assert "P0" not in str(m.to_dict())  # a pseudonym, never the identifier

    test = load_split(m, tmp_path / "ds", image_size=16, cache_dir=tmp_path / "c")["test"]
    expected = sorted({_key_value(f"PatientID={owner[p]}") for p in test.paths})
    assert test.groups == [_key_value(f"PatientID={owner[p]}") for p in test.paths]
    # Patient metrics: one row per test patient, each with its own slices' count and its label.
    patients = Patients.from_groups(test.groups)
    assert patients.ids == expected
    assert patients.sizes() == [
        sum(1 for p in test.paths if _key_value(f"PatientID={owner[p]}") == i) for i in expected
    ]
    probs = torch.nn.functional.one_hot(test.labels, 2).float()  # a perfect slice classifier
    ids, pred = aggregate(probs, patients, "mean", CLASSES)
    y, mixed = patient_labels(test.labels, patients, CLASSES)
    metrics = patient_metrics(y, pred, CLASSES)
    assert ids == expected and mixed == 0
    assert metrics["n"] == len(expected) and metrics["accuracy"] == 1.0


def test_a_patient_under_two_labels_is_reported_by_the_audit(tmp_path: Path) -> None:
    owner = _patients(tmp_path / "ds", {"P00": 2, "P01": 2, "P10": 2, "P11": 2})
    write_dicom(tmp_path / "ds" / "Malignant cases" / "IM 50.dcm", noise_slice(50), patient="P00")
    report = audit_dataset(tmp_path / "ds", image_size=16, cache_dir=tmp_path / "c")
    assert report["mixed_label_groups"] == [
        {"group": _key_value("PatientID=P00"), "labels": {"benign": 2, "malignant": 1}}
    ]
    assert any("carry two labels" in w for w in report["warnings"])
    assert "P00" not in str(report) and len(owner) == 8
    # The split keeps the patient whole; patient labels resolve it by majority.
    m = make_split(
        tmp_path / "ds", seed=0, fractions=(0.5, 0.25, 0.25), image_size=16, cache_dir=tmp_path / "c"
    )
    sides = {n for n, es in m.splits.items() for e in es if e["group"] == _key_value("PatientID=P00")}
    assert len(sides) == 1


def test_old_manifests_without_groups_load_with_none(tmp_path: Path) -> None:
    _patients(tmp_path / "ds", {"P00": 2, "P01": 2, "P10": 2, "P11": 2})
    m = make_split(
        tmp_path / "ds", seed=0, fractions=(0.5, 0.25, 0.25), image_size=16, cache_dir=tmp_path / "c"
    )
    for entries in m.splits.values():
        for e in entries:
            e.pop("group")
    test = load_split(m, tmp_path / "ds", image_size=16, cache_dir=tmp_path / "c")["test"]
    assert test.groups is None


def test_given_grouping_names_dicom_patients_and_otherwise_each_image(tmp_path: Path) -> None:
    root, n = tmp_path / "ds", 0
    for part in ("train", "val", "test"):
        for c in ("a", "b"):
            for i in range(2):
                named, n = c == "a", n + 1  # class a's files name their patient, class b's do not
                write_dicom(
                    root / part / c / f"{i}.dcm",
                    noise_slice(n),
                    patient=f"P-{part}-{c}" if named else None,
                )
    m = make_split(root, grouping="given", image_size=16, cache_dir=tmp_path / "c")
    for entries in m.splits.values():
        for e in entries:
            if e["path"].split("/")[1] == "a":
                part = e["path"].split("/")[0]
                assert e["group"] == _key_value(f"PatientID=P-{part}-a")
            else:
                assert e["group"] == e["path"]
