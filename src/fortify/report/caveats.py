"""What qualifies the headline numbers: which interval the brackets are, the leakage sentinel, and
whether the attacks ran at full strength. Read from results.json; every field may be absent (older
files), and then the report says nothing rather than guess."""

from __future__ import annotations

from typing import Any

from fortify.report.doc import Document, Para
from fortify.report.fmt import DASH, STAGE_LABELS, fmt_ci, pct
from fortify.report.run_files import RunData

UPPER_BOUND_MARK = "≤"


def budget_cut(results: dict[str, Any] | None) -> str | None:
    """The note explaining why robust accuracies are upper bounds, or None at full strength / unknown."""
    budget = (results or {}).get("budget")
    if not isinstance(budget, dict) or budget.get("full_strength", True) is not False:
        return None
    return str(budget.get("note") or "attack budgets were cut below the full-strength evaluation")


def sentinel_of(results: dict[str, Any] | None) -> dict[str, Any] | None:
    s = (results or {}).get("leakage_sentinel")
    return s if isinstance(s, dict) else None


def sentinel_cell(results: dict[str, Any] | None) -> str:
    s = sentinel_of(results)
    if not s or s.get("accuracy") is None:
        return DASH
    return pct(s["accuracy"]) + fmt_ci(s.get("accuracy_ci")) + (" ⚠ LEAKAGE" if s.get("warning") else "")


def sentinel_warnings(run: RunData) -> list[str]:
    """One loud line per model whose results carry a sentinel warning."""
    out = []
    for name, stage in run.stages.items():
        warning = (sentinel_of(stage.results) or {}).get("warning")
        if warning:
            out.append(f"{STAGE_LABELS.get(name, name)}: {warning}")
    return out


def add_alarms(doc: Document, run: RunData) -> None:
    for line in sentinel_warnings(run):
        doc.add(Para(line, "alarm"))


def sentinel_note(run: RunData) -> str | None:
    """How the sentinel column was measured (the split is shared, so the first description serves)."""
    for stage in run.stages.values():
        s = sentinel_of(stage.results)
        if s and s.get("accuracy") is not None:
            share = s.get("neighbour_share")
            text = (
                f"1-NN sentinel: {s.get('method', '1-nearest-neighbour on raw pixels')} "
                f"(thumbnails {s.get('thumbnail', '?')} px, {s.get('n_test', '?')} test images). "
                "A classifier that cannot generalise, only recognise: a model that does not clearly "
                "beat it may be recognising near-copies of training scans rather than diagnosing."
            )
            if isinstance(share, (int, float)):
                text += (
                    f" {pct(share)}% of test images have a file-number neighbour (an adjacent slice of "
                    "the same scan, by file name) as their nearest training image."
                )
            return text
    return None


def interval_note(run: RunData) -> str:
    """Which interval the brackets are, said once."""
    intervals = [(s.results or {}).get("interval") for s in run.stages.values() if s.results]
    has_ci = any(
        isinstance((s.results or {}).get("clean"), dict) and s.results["clean"].get("accuracy_ci")
        for s in run.stages.values()
    )
    if not has_ci:
        return "These results.json files record no intervals (older format): accuracies are shown bare."
    spec = next((i for i in intervals if isinstance(i, dict)), {})
    method = {"wilson": "Wilson score"}.get(str(spec.get("method")), str(spec.get("method", "recorded")))
    level = spec.get("level", 0.95)
    level_txt = f"{100 * level:.0f}%" if isinstance(level, (int, float)) else str(level)
    return (
        f"Brackets: {method} {level_txt} interval, one split: it covers the sampling of the test images "
        "only, not what retraining or a different split would change (see a cross-validated run for "
        "that). Combined's interval counts the three attacked copies of each scan as independent images "
        "and is therefore too narrow."
    )


def add_budget_notes(doc: Document, run: RunData) -> None:
    for name, stage in run.stages.items():
        note = budget_cut(stage.results)
        if note:
            doc.add(
                Para(
                    f"{STAGE_LABELS.get(name, name)}: {UPPER_BOUND_MARK} = upper bound. The attacks ran "
                    f"below full strength ({note}); a stronger attack can only lower these accuracies, so "
                    "they are not robustness measurements.",
                    "warn",
                )
            )
