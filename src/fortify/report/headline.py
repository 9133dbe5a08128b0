"""Table 1 (fortify beside the study) and the sanity checks whose failures mark its numbers."""

from __future__ import annotations

from typing import Any

from fortify.report.caveats import (
    UPPER_BOUND_MARK,
    add_budget_notes,
    budget_cut,
    interval_note,
    sentinel_cell,
    sentinel_note,
)
from fortify.report.doc import Document, Heading, Para, Table
from fortify.report.fmt import (
    DASH,
    STAGE_LABELS,
    TABLE1_COLUMNS,
    fmt_threat,
    metrics_for,
    pct,
    pct_ci,
    source_of,
)
from fortify.report.run_files import RunData
from fortify.report.study import STUDY_COLUMNS


def _failed_checks(results: dict[str, Any], run: RunData | None = None, stage: str = "") -> list[dict]:
    """Failed checks of one model: its own, plus the transfer check of pairs that target it."""
    checks = list(results.get("sanity") or [])
    for pair in ((run.transfer or {}).get("pairs") or []) if run else []:
        if pair.get("target") == stage and isinstance(pair.get("sanity"), dict):
            checks.append(pair["sanity"])
    return [c for c in checks if not c.get("passed", False)]


# ---------------------------------------------------------------- sections


SENTINEL_HEADER = "1-NN sentinel"


def _columns() -> list[tuple[str, str]]:
    """Table 1's columns: the leakage sentinel right beside Clean, where it can be compared."""
    return [TABLE1_COLUMNS[0], ("sentinel", SENTINEL_HEADER), *TABLE1_COLUMNS[1:]]


TABLE1_CAPTION = (
    "Accuracy on the test split [95% interval]; 1-NN sentinel = a nearest-neighbour "
    "classifier on raw pixels (leakage check, beside Clean); Combined = pooled FGSM+PGD+CW "
    "adversarial test sets (the study's definition); Worst-case = robust only if no attack fools "
    "the scan; Strong = fortify's per-sample worst case over APGD-CE, APGD-DLR (+targeted), PGD-CW "
    "with restarts and the gradient-free Square attack (the headline, L-inf); L2 (APGD) = APGD-L2 "
    "in the L2 ball of CW's budget (the CW column counts CW's minimal L2 against the same budget)."
)


def _fortify_cells(
    run: RunData,
    name: str,
    label: str,
    results: dict[str, Any],
    columns: list[tuple[str, str]],
    footnotes: list[str],
) -> list[str]:
    """One stage's Table 1 cells; each failed sanity check becomes a footnote (appended to `footnotes`)
    whose number marks the columns it undermines."""
    bound = budget_cut(results) is not None
    marks: dict[str, list[int]] = {}
    for check in _failed_checks(results, run, name):
        footnotes.append(f"{label}: sanity check FAILED: {check.get('check')}: {check.get('detail', '')}")
        for col in check.get("undermines") or []:
            marks.setdefault(col, []).append(len(footnotes))
    cells = []
    for col, _ in columns:
        if col == "sentinel":
            cells.append(sentinel_cell(results))
            continue
        m = metrics_for(results, col)
        # Clean accuracy is measured, not attacked: it is never an upper bound.
        cell = pct_ci(m, bound=bound and col != "clean")
        if col in marks and m:
            cell += " ⚠ FAIL" + "".join(f"[{i}]" for i in marks[col])
        cells.append(cell)
    return cells


def section_table1(
    doc: Document, run: RunData, study: dict[str, Any] | None, study_note: str | None = None
) -> None:
    """Table 1: fortify's rows, and the study's beside them when `study` is given (the run's data is the
    study's dataset, see report.study.study_for); `study_note` says why they are absent otherwise."""
    doc.add(Heading("Table 1: test accuracy (%)" + (", fortify beside the study" if study else "")))
    columns = _columns()
    footnotes: list[str] = []
    rows: list[list[str]] = []
    for name, label in STAGE_LABELS.items():
        stage = run.stages.get(name)
        results = stage.results if stage else None
        if results is None:
            rows.append([label, "fortify", *([f"{DASH} (stage not run)"] + [DASH] * (len(columns) - 1))])
        else:
            rows.append([label, "fortify", *_fortify_cells(run, name, label, results, columns, footnotes)])
        if not study:
            continue
        srow = (study.get("rows") or {}).get(name) or {}
        rows.append(
            [
                label,
                "study",
                *[pct(srow[c] / 100) if c in STUDY_COLUMNS and c in srow else DASH for c, _ in columns],
            ]
        )
    any_cut = any(budget_cut(s.results) for s in run.stages.values())
    doc.add(
        Table(
            ["Training", "Numbers", *[h for _, h in columns]],
            rows,
            caption=TABLE1_CAPTION
            + (f" {UPPER_BOUND_MARK} = upper bound (attacks below full strength)." if any_cut else ""),
        )
    )
    if study_note:
        doc.add(Para(study_note, "note"))
    # the leakage alarms were said once, before any number (build.py); the sentinel cells carry ⚠ LEAKAGE
    doc.add(Para(interval_note(run), "note"))
    note = sentinel_note(run)
    if note:
        doc.add(Para(note, "note"))
    add_budget_notes(doc, run)
    srcs = [source_of(run, s) for s in run.stages.values() if s.results]
    src = "fortify rows: " + ("; ".join(srcs) if srcs else "none")
    if study:
        src += f". Study rows: {study.get('path')} ({' '.join(str(study.get('citation', '')).split())})"
    doc.add(Para(src, "source"))
    if study:
        doc.add(
            Para(
                "A '—' in a study row is a figure the study did not state; fortify does not fill it in. "
                "The study did not state its threat model, so its numbers and ours may not be measured under "
                "the same attack budget; see 'Threat model' for ours."
            )
        )
    doc.add(Para(_setting_note(run, study)))
    for i, note in enumerate(footnotes, 1):
        doc.add(Para(f"[{i}] {note}", "warn"))


def _setting_note(run: RunData, study: dict[str, Any] | None) -> str:
    """What our columns measured (threat model per column, model, image size) next to the study's setting."""
    parts = []
    for name, stage in run.stages.items():
        r = stage.results or {}
        if not r:
            continue
        ck, data = r.get("checkpoint") or {}, r.get("data") or {}
        cols = ", ".join(
            f"{k} {fmt_threat(a.get('threat_model'))}" for k, a in (r.get("attacks") or {}).items()
        )
        parts.append(
            f"{STAGE_LABELS[name]}: {ck.get('model', '?')} ({ck.get('mode', '?')}) at "
            f"{data.get('image_size', '?')} px on {data.get('n', '?')} test images; {cols}."
        )
    if study:
        parts.append(f"The study's rows: {study.get('model', '?')} on {study.get('dataset', 'IQ-OTH/NCCD')}.")
    return "Setting: " + " ".join(parts) if parts else "Setting: no evaluation found."


def section_sanity(doc: Document, run: RunData) -> None:
    doc.add(Heading("Sanity checks (Carlini et al. 2019)"))
    rows = []
    for name, stage in run.stages.items():
        for check in (stage.results or {}).get("sanity") or []:
            rows.append(
                [
                    STAGE_LABELS[name],
                    str(check.get("check", "?")),
                    "PASS" if check.get("passed") else "FAIL",
                    str(check.get("detail", "")),
                    ", ".join(check.get("undermines") or []) or DASH,
                ]
            )
    for pair in (run.transfer or {}).get("pairs") or []:
        check = pair.get("sanity")
        if isinstance(check, dict):
            rows.append(
                [
                    f"{pair.get('target')} (transfer from {pair.get('source')})",
                    str(check.get("check", "?")),
                    "PASS" if check.get("passed") else "FAIL",
                    str(check.get("detail", "")),
                    ", ".join(check.get("undermines") or []) or DASH,
                ]
            )
    if not rows:
        doc.add(Para("No sanity checks were recorded (evaluation missing or did not run them).", "warn"))
        return
    doc.add(
        Table(
            ["Model", "Check", "Result", "Detail", "Undermines"],
            rows,
            source="'sanity' in "
            + ", ".join(run.rel(s.results_path) for s in run.stages.values() if s.results)
            + (", transfer.json pairs" if run.transfer else ""),
        )
    )
    n_fail = sum(r[2] == "FAIL" for r in rows)
    if n_fail:
        doc.add(
            Para(
                f"{n_fail} sanity check(s) FAILED; the numbers they undermine are marked in Table 1 and "
                "should not be trusted as robustness claims.",
                "warn",
            )
        )
