"""build_cv_report: the K-fold table (mean ± std, t-interval, per-fold values, pooled Wilson accuracy,
the study beside), the sentinel per fold and the paired comparison, from cv/summary.json."""

from __future__ import annotations

import copy

import pytest

from fortify.errors import ConfigError
from fortify.evaluation.compare import compare_results
from fortify.evaluation.cv import summarize_folds
from fortify.evaluation.stats import mean_std_interval, wilson_interval
from fortify.fileio import write_json
from fortify.report import build_cv_report, load_study_table

from .conftest import IQOTHNCCD_IDENTITY, STAGE_ACCS, SYNTHETIC_IDENTITY, results


def fold(i: int, *, shift: float, warn: bool = False, full_strength: bool = True) -> dict:
    out = {}
    for stage in ("normal", "adversarial"):
        accs = {k: max(v - shift, 0.0) for k, v in STAGE_ACCS[stage].items()}
        r = results(
            stage, accs, synthetic=False, failing=False, sentinel_warning=warn, full_strength=full_strength
        )
        r["per_sample"]["paths"] = [f"fold{i}/{p}" for p in r["per_sample"]["paths"]]
        out[stage] = r
    return {
        "fold": i,
        **out,
        "sentinel": out["normal"]["leakage_sentinel"],
        "comparison": compare_results(out["normal"], out["adversarial"]),
    }


def write_cv(tmp_path, folds, identity: dict | None = IQOTHNCCD_IDENTITY) -> object:
    """RUN_DIR/cv/summary.json, and RUN_DIR/audit.json naming the dataset (none when identity is None)."""
    cv = tmp_path / "run" / "cv"
    write_json(cv / "summary.json", summarize_folds(folds))
    if identity is not None:
        write_json(cv.parent / "audit.json", {"format": "fortify-audit/1", "dataset": {"identity": identity}})
    return cv


def rows_of(md: str, header_start: str) -> dict[str, dict[str, str]]:
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    out = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        out[cells[0]] = dict(zip(header, cells, strict=True))
    return out


def test_cv_table_has_mean_std_interval_folds_pooled_and_study(tmp_path):
    folds = [fold(0, shift=0.0), fold(1, shift=0.1), fold(2, shift=0.0667, warn=True)]
    md_path, html_path = build_cv_report(write_cv(tmp_path, folds))
    assert md_path.name == "report.md" and html_path.is_file()
    md = md_path.read_text()
    normal = rows_of(md, "| Metric (%) | Mean ± std |")  # first table: normal training
    clean = normal["Clean"]
    values = [STAGE_ACCS["normal"]["clean"] - s for s in (0.0, 0.1, 0.0667)]
    s = mean_std_interval(values, bounds=(0.0, 1.0))
    assert clean["Mean ± std"] == f"{100 * s['mean']:.2f} ± {100 * s['std']:.2f}"
    assert clean["95% t-interval"] == f"[{100 * s['ci'][0]:.1f}, {100 * s['ci'][1]:.1f}]"
    assert [clean[f"Fold {i}"] for i in range(3)] == [f"{100 * v:.2f}" for v in values]
    k = sum(round(v * 30) for v in values)
    lo, hi = wilson_interval(k, 90)
    assert clean["Pooled [Wilson 95%]"] == f"{100 * k / 90:.2f} [{100 * lo:.1f}, {100 * hi:.1f}]"
    study = load_study_table()
    assert clean["Study"] == f"{study['rows']['normal']['clean']:.2f}"
    assert normal["PGD"]["Study"] == f"{study['rows']['normal']['pgd']:.2f}"
    assert normal["Worst-case"]["Study"] == "—"  # not stated by the study, never invented
    assert normal["Combined"]["Pooled [Wilson 95%]"] == "—"  # no per-image record for combined
    assert {"Benign recall (clean)", "Balanced acc (clean)", "Worst-case", "Strong"} <= set(normal)
    assert "Adversarial training: Table 1 numbers across folds" in md
    # sentinel per fold, with the leaking fold shouted
    sent = rows_of(md, "| Fold | 1-NN sentinel %")
    assert "LEAKAGE" in sent["2"]["1-NN sentinel % [95% CI]"] and "LEAKAGE" not in sent["0"]["Warning"]
    assert "WARNING: fold 2: LEAKAGE SUSPECTED" in md.split("## ")[0]  # before the first section
    # paired comparison over all folds' images, and per fold
    assert "Paired comparison on the same 90 test images" in md and "Exact McNemar p" in md
    assert "| Metric | Fold 0 | Fold 1 | Fold 2 |" in md
    assert 'class="alarm"' in html_path.read_text()


def test_cv_upper_bounds_labelled(tmp_path):
    folds = [fold(0, shift=0.0), fold(1, shift=0.1, full_strength=False)]
    md = build_cv_report(write_cv(tmp_path, folds))[0].read_text()
    normal = rows_of(md, "| Metric (%) | Mean ± std |")
    assert normal["PGD"]["Mean ± std"].startswith("≤") and normal["PGD"]["Pooled [Wilson 95%]"].startswith(
        "≤"
    )
    assert not normal["Clean"]["Mean ± std"].startswith("≤")
    assert "≤ = upper bound" in md


def test_cv_report_tolerates_sparse_summary(tmp_path):
    f0 = fold(0, shift=0.0)
    f1 = copy.deepcopy(f0)  # same images: not a partition, so no pooled numbers
    f1.update(fold=1, adversarial=None, sentinel=None, comparison=None)
    md = build_cv_report(write_cv(tmp_path, [f0, f1]))[0].read_text()
    assert "more than one test fold" in md and "No pooled paired comparison" in md
    minimal = tmp_path / "minimal"
    write_json(minimal / "summary.json", {"format": "fortify-cv/1", "k": 0})
    assert "cross-validation" in build_cv_report(minimal)[0].read_text()


def test_cv_report_needs_a_summary(tmp_path):
    with pytest.raises(ConfigError):
        build_cv_report(tmp_path)
    write_json(tmp_path / "summary.json", {"format": "fortify-results/1"})
    with pytest.raises(ConfigError):
        build_cv_report(tmp_path)


@pytest.mark.parametrize("identity", [SYNTHETIC_IDENTITY, None])
def test_cv_study_column_only_for_iqothnccd(tmp_path, identity):
    md = build_cv_report(write_cv(tmp_path, [fold(0, shift=0.0), fold(1, shift=0.1)], identity))[
        0
    ].read_text()
    normal = rows_of(md, "| Metric (%) | Mean ± std |")
    assert "Study" not in normal["Clean"] and "Study rows:" not in md
    assert "The study's rows are left out" in md
    assert (identity is None) == ("audit.json does not identify the dataset" in md)


def test_cv_report_pools_recall_per_class_when_the_folds_carry_labels(tmp_path):
    folds = [fold(0, shift=0.0), fold(1, shift=0.1)]
    for f in folds:
        paths = f["normal"]["per_sample"]["paths"]
        f["labels"] = {p: i % 3 for i, p in enumerate(paths)}
    md = build_cv_report(write_cv(tmp_path, folds))[0].read_text()
    rows = rows_of(md, "| Class | Clean |")  # the normal model's per-class table comes first
    assert set(rows) == {"benign", "malignant", "normal"}
    summary = summarize_folds(folds)["pooled"]["normal"]["per_class"]["benign"]["clean"]
    lo, hi = wilson_interval(summary["correct"], summary["n"])
    expected = f"{100 * summary['recall']:.2f} [{100 * lo:.1f}, {100 * hi:.1f}]"
    assert rows["benign"]["Clean"] == f"{expected} ({summary['correct']}/{summary['n']})"
    assert summary["n"] == 20  # 10 of each fold's 30 images
    assert "recall (sensitivity) of each true class" in md
    # without labels there is no such table (nothing invented)
    md2 = build_cv_report(write_cv(tmp_path / "plain", [fold(0, shift=0.0), fold(1, shift=0.1)]))[
        0
    ].read_text()
    assert "| Class | Clean |" not in md2
