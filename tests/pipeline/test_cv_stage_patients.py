"""The cv stage on hand-written fold directories (no training): cv/summary.json pools each model's patients
over the folds and the CV report shows them; a patient tested in two folds stops the stage with a one-line
DataError."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the report package's fixtures

from report.conftest import CLASSES, STAGE_ACCS, results  # noqa: E402
from report.patient_fixture import LABELS, accuracy, add_patients  # noqa: E402

from fortify.errors import DataError  # noqa: E402
from fortify.evaluation.compare import compare_results  # noqa: E402
from fortify.evaluation.stats import wilson_interval  # noqa: E402
from fortify.fileio import read_json, write_json  # noqa: E402
from fortify.pipeline.cv_stage import _run_cv  # noqa: E402


def write_fold(root: Path, i: int, prefix: str) -> None:
    d = root / f"fold-{i}"
    written = {}
    for stage in ("normal", "adversarial"):
        r = results(stage, STAGE_ACCS[stage], synthetic=False, failing=False)
        r["per_sample"]["paths"] = [f"fold{i}/{p}" for p in r["per_sample"]["paths"]]
        written[stage] = add_patients(r, stage, prefix=prefix)
        write_json(d / stage / "eval" / "results.json", written[stage])
    write_json(d / "comparison.json", compare_results(written["normal"], written["adversarial"]))
    test = [
        {"path": p, "label": k % 3, "sha256": "x", "group": g}
        for k, (p, g) in enumerate(
            zip(
                written["normal"]["per_sample"]["paths"],
                written["normal"]["per_sample"]["groups"],
                strict=True,
            )
        )
    ]
    manifest = {
        "format": "fortify-split/1",
        "dataset": {"root": "/data", "classes": CLASSES},
        "preprocessing": {"image_size": 16},
        "seed": 0,
        "fractions": [0.7, 0.15, 0.15],
        "splits": {"train": [], "val": [], "test": test},
    }
    write_json(d / "split.json", manifest)


def at(root: Path, folds: int) -> SimpleNamespace:
    return SimpleNamespace(run=SimpleNamespace(out=root, progress=False), folds=folds)


def test_cv_stage_pools_patients_and_reports_them(tmp_path):
    for i in range(2):
        write_fold(tmp_path, i, prefix=f"fold{i}/")
    _run_cv(at(tmp_path, 2))
    summary = read_json(tmp_path / "cv" / "summary.json")
    correct, n = accuracy("adversarial", "worst_case")
    wc = summary["patient"]["adversarial"]["worst_case"]
    assert (wc["correct"], wc["n"]) == (2 * correct, 2 * n) and summary["patient"]["normal"]["n"] == 2 * n
    md = (tmp_path / "cv" / "report.md").read_text()
    assert "## Patient level, pooled over the folds" in md
    lo, hi = wilson_interval(2 * correct, 2 * n)
    patients = md[md.index("## Patient level") :].splitlines()
    row = next(line for line in patients if line.startswith("| Worst-case |"))
    assert f"{100 * correct / n:.2f} [{100 * lo:.1f}, {100 * hi:.1f}] ({2 * correct}/{2 * n})" in row
    assert f"patients per fold: Normal training {len(LABELS)}+{len(LABELS)}" in md
    # the per-fold table: each fold's own correct patients, not the pooled count
    per_fold = next(line for line in patients if line.startswith("| Adversarial training | Worst-case |"))
    assert per_fold.count(f"{100 * correct / n:.2f} ({correct}/{n})") == 2, per_fold
    assert "the adversary controls every slice of the scan, each within eps" in md
    assert "on the same 24 patients" in md  # the pooled McNemar over patients
    assert "patient" in (tmp_path / "cv" / "report.html").read_text()


def test_cv_stage_refuses_a_patient_in_two_folds(tmp_path):
    for i in range(2):
        write_fold(tmp_path, i, prefix="")  # the same patient ids in both folds
    with pytest.raises(DataError, match="tested in both fold 0 and fold 1"):
        _run_cv(at(tmp_path, 2))
