"""The paired comparison section: normal vs adversarially trained model on the same test images
(RUN_DIR/comparison.json, fortify-comparison/1), over the same patients where both results carry them,
and the same tables for pooled CV folds."""

from __future__ import annotations

from typing import Any

from fortify.report.caveats import budget_cut
from fortify.report.doc import Document, Heading, Para, Table
from fortify.report.fmt import DASH, STAGE_LABELS, fmt_diff, fmt_p, pct
from fortify.report.run_files import RunData


def comparison_table(comparison: dict[str, Any], source: str, unit: str = "test images") -> Table:
    """One row per metric: both accuracies, difference b - a with its interval, discordant counts, p."""
    a = str(comparison.get("a", "a"))
    b = str(comparison.get("b", "b"))
    rows = []
    for key, m in (comparison.get("metrics") or {}).items():
        rows.append(
            [
                key,
                pct(m.get("a_accuracy")),
                pct(m.get("b_accuracy")),
                fmt_diff(m.get("difference"), m.get("difference_ci")),
                str(m.get("b01", DASH)),
                str(m.get("b10", DASH)),
                fmt_p(m.get("p_value")),
            ]
        )
    method = comparison.get("method") or {}
    return Table(
        [
            "Metric",
            f"{a} %",
            f"{b} %",
            f"Difference {b} − {a}, points [{_level(method)} CI]",
            f"{a} right, {b} wrong",
            f"{a} wrong, {b} right",
            "Exact McNemar p",
        ],
        rows,
        caption=f"Paired comparison on the same {comparison.get('n', '?')} {unit}. Interval: "
        f"{method.get('interval', 'not recorded')}; test: {method.get('test', 'not recorded')}.",
        source=source,
    )


def patient_comparison_table(comparison: dict[str, Any], source: str) -> Table | None:
    """The same table over the patients both results scored (comparison["patient"], matched by id):
    clean, joint and worst-case patient outcomes; None when the comparison has no patient part."""
    patient = comparison.get("patient")
    if not isinstance(patient, dict) or not patient.get("mcnemar"):
        return None
    unit = f"patients (aggregation rule '{patient.get('rule', '?')}')"
    left_out = [
        f"{patient[k]} of {comparison.get(k[0], k[0])} only" for k in ("a_only", "b_only") if patient.get(k)
    ]
    if left_out:
        unit += f"; not paired, left out: {', '.join(left_out)}"
    method = dict(comparison.get("method") or {})
    if isinstance(method.get("test"), str):
        method["test"] = method["test"].replace("images", "patients")
    view = {**comparison, "n": patient.get("n"), "metrics": patient["mcnemar"], "method": method}
    return comparison_table(view, source, unit)


def _level(method: dict[str, Any]) -> str:
    level = method.get("level")
    return f"{100 * level:.0f}%" if isinstance(level, (int, float)) else "95%"


def section_comparison(doc: Document, run: RunData) -> None:
    doc.add(Heading("Paired comparison: does adversarial training change accuracy?"))
    comparison = run.comparison
    if not comparison or not comparison.get("metrics"):
        doc.add(Para("No paired comparison was recorded (comparison.json not found or empty).", "warn"))
        return
    doc.add(comparison_table(comparison, "comparison.json (from both results.json 'per_sample')"))
    patients = patient_comparison_table(
        comparison, "comparison.json 'patient' (from both results.json 'patient')"
    )
    if patients is not None:
        doc.add(patients)
    doc.add(
        Para(
            "Only the images on which the two models disagree carry evidence about which is better; the "
            "p-value is the exact McNemar test on them. An interval that contains 0 means this test split "
            "cannot tell the two models apart on that metric."
        )
    )
    cut = [STAGE_LABELS.get(n, n) for n, s in run.stages.items() if budget_cut(s.results)]
    if cut:
        doc.add(
            Para(
                f"Attacks below full strength for: {', '.join(cut)}. Their robust accuracies are upper "
                "bounds, so the differences above compare two upper bounds and bound nothing.",
                "warn",
            )
        )
