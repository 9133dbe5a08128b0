"""The patient-level Table 1 (issue 31): numbers read from results.json's `patient` block, the threat model
and aggregation rule stated, per-class patient sensitivity, the McNemar over patients, and nothing at all
for results written before patients existed (the slice-level tables unchanged either way)."""

from __future__ import annotations

import pytest

from fortify.evaluation.compare import compare_results
from fortify.evaluation.stats import wilson_interval
from fortify.fileio import read_json, write_json
from fortify.report import build_report

from .conftest import make_run
from .patient_fixture import LABELS, RULE_TEXT, WRONG, accuracy, add_patients, class_recall
from .test_report import table1_rows

ROWS = [
    ("Clean", "clean"),
    ("PGD", "pgd"),
    ("FGSM", "fgsm"),
    ("CW", "cw"),
    ("Strong", "strong"),
    ("Joint (whole scan)", "joint"),
    ("Worst-case", "worst_case"),
]
MODELS = (("normal", "Normal training"), ("adversarial", "Adversarial training"))


def expected(correct: int, n: int) -> str:
    """A patient cell: percent [Wilson 95%] (correct/n), computed here from the chosen outcomes."""
    lo, hi = wilson_interval(correct, n)
    return f"{100 * correct / n:.2f} [{100 * lo:.1f}, {100 * hi:.1f}] ({correct}/{n})"


def with_patients(root, *, joint_passed: bool = True, comparison: bool = True, **kw):
    """The conftest run with a `patient` block in both results.json (and comparison.json re-made)."""
    make_run(root)
    written = {}
    for stage, _ in MODELS:
        path = root / stage / "eval" / "results.json"
        r = add_patients(read_json(path), stage, joint_passed=joint_passed or stage == "normal", **kw)
        write_json(path, r)
        written[stage] = r
    if comparison:
        write_json(root / "comparison.json", compare_results(written["normal"], written["adversarial"]))
    return root


def table(md: str, header_start: str) -> list[list[str]]:
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return [rows[0], *rows[2:]]  # header, then the body (no separator)


@pytest.fixture(scope="module")
def patient_report(tmp_path_factory):
    root = with_patients(tmp_path_factory.mktemp("patients") / "run", joint_passed=False)
    out = build_report(root)
    return out["markdown"].read_text(), out["html"].read_text()


def test_patient_table1_numbers_both_models(patient_report):
    md, _ = patient_report
    header, *body = table(md, "| Patient-level metric |")
    assert header == ["Patient-level metric", "Normal training %", "Adversarial training %"]
    rows = {r[0]: r[1:] for r in body}
    assert list(rows)[: len(ROWS)] == [label for label, _ in ROWS]
    for label, key in ROWS:
        for col, (stage, _) in enumerate(MODELS):
            cell = rows[label][col]
            if stage == "adversarial" and key == "joint":  # its joint check failed: marked, footnoted
                assert cell == expected(*accuracy(stage, key)) + " ⚠ FAIL[1]"
            else:
                assert cell == expected(*accuracy(stage, key)), (label, stage)
    # normal: 1 patient wrong clean, 11 under the joint attack, 11 in the worst case of 12
    assert rows["Clean"][0].startswith("91.67 [") and rows["Worst-case"][0].startswith("8.33 [")
    assert rows["Patients"] == [str(len(LABELS))] * 2
    assert rows["Slices per patient"] == ["median 2.5 (range 1–4), mean 2.5"] * 2
    assert "[1] Adversarial training: sanity check FAILED: joint attack no weaker than the per-slice" in md


def test_patient_sensitivity_and_missed_cancers(patient_report):
    md, _ = patient_report
    header, *body = table(md, "| Model | True class: sensitivity")
    keys = [k for _, k in ROWS]
    assert header[2:] == [label for label, _ in ROWS]
    rows = {(r[0], r[1]): r[2:] for r in body}
    for stage, label in MODELS:
        for cls in ("benign", "malignant"):
            for i, key in enumerate(keys):
                k, n = class_recall(stage, key, cls)
                lo, hi = wilson_interval(k, n)
                want = f"{100 * k / n:.2f} [{100 * lo:.1f}, {100 * hi:.1f}] ({k}/{n})"
                assert rows[(label, cls)][i] == want, (stage, cls, key)
    # malignant patients 3, 4, 5 fall 1st, 5th and 8th (FALL_ORDER): PGD (9 wrong) misses 3 of the 4
    missed = rows[("Normal training", "malignant called normal")]
    assert missed == ["1", "3", "2", "2", "3", "3", "3"]
    assert rows[("Adversarial training", "malignant called normal")][0] == "1"


def test_patient_threat_model_and_rule_stated_in_both_renderings(patient_report):
    md, html = patient_report
    for text in (md, html):
        assert "Table 1 per patient" in text
        assert "the adversary controls every slice of the scan, each within eps" in text
        assert RULE_TEXT.replace("'", "&#x27;") in text or RULE_TEXT in text
    assert "joint-pgd:eps=2/255" in md
    # the patient table sits right after the slice-level Table 1, before the paired comparison
    assert md.index("## Table 1: test accuracy") < md.index("Table 1 per patient") < md.index("## Paired")
    assert "the joint attack flipped 10 clean-correct patient(s)" in md
    assert "3 malignant patient(s) the untargeted joint attack did not send to normal" in md
    assert "1 of them reached it" in md


def test_patient_mcnemar_beside_slice_comparison(patient_report):
    md, _ = patient_report
    assert "Paired comparison on the same 12 patients (aggregation rule 'mean')" in md
    header, *body = table(md, "| Metric | normal % | adversarial % |")  # the first: slice level
    assert [r[0] for r in body][:2] == ["clean", "fgsm"]
    start = md.index("Paired comparison on the same 12 patients")
    _, *patients = table(md[start:], "| Metric |")
    rows = {r[0]: r for r in patients}
    assert list(rows) == ["clean", "joint", "worst_case"]
    # nested outcomes: joint wrong for 11 (normal) vs 6 (adversarial) patients -> 5 discordant, one way
    assert rows["joint"][4:6] == ["0", "5"]


def test_old_results_render_without_patient_section(tmp_path, built_report):
    md_old = built_report["markdown"].read_text()
    assert "per patient" not in md_old and "adversary controls" not in md_old
    assert "patients" not in md_old
    md_new = build_report(with_patients(tmp_path / "run"))["markdown"].read_text()
    assert table1_rows(md_new) == table1_rows(md_old)  # the slice-level Table 1 is unchanged


def test_one_group_per_image_and_mixed_labels_are_said(tmp_path):
    root = with_patients(tmp_path / "run", groups_from="none (one group per image)", mixed_label_groups=2)
    md = build_report(root)["markdown"].read_text()
    assert "every image is its own patient" in md
    assert "2 patient group(s) hold slices of two classes" in md
    assert "majority (ties: malignant > benign > normal)" in md


def test_patient_block_in_one_model_only(tmp_path):
    root = make_run(tmp_path / "run")
    path = root / "adversarial" / "eval" / "results.json"
    write_json(path, add_patients(read_json(path), "adversarial"))
    md = build_report(root)["markdown"].read_text()
    _, *body = table(md, "| Patient-level metric |")
    clean = next(r for r in body if r[0] == "Clean")
    assert clean[1] == "—" and clean[2] == expected(len(LABELS) - WRONG["adversarial"]["clean"], len(LABELS))
