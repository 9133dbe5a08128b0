"""Patient-level Table 1 (issue 31): the unit a clinician decides on is a scan, not a slice.

Reads results.json's `patient` block (and cv/summary.json's pooled one, which has the same shape): the
accuracy over patients, clean, under each per-slice attack's aggregate, the joint attack on the whole scan
and the worst case, for both models side by side; each class's patient sensitivity; malignant patients
called normal; and the threat model and aggregation rule those numbers assume. A run whose results carry
no patient block gets no section at all (results written before issue 31 still render as before)."""

from __future__ import annotations

from typing import Any

from fortify.report.caveats import UPPER_BOUND_MARK, budget_cut
from fortify.report.doc import Document, Heading, Para, Table
from fortify.report.fmt import DASH, STAGE_LABELS, TABLE1_COLUMNS, fmt_threat, pct_ci
from fortify.report.run_files import RunData

PATIENT_ONLY = {"joint": "Joint (whole scan)", "worst_case": "Worst-case"}
DEFAULT_SCOPE = "every slice of the scan, each within eps"


def patient_of(results: dict[str, Any] | None) -> dict[str, Any] | None:
    block = (results or {}).get("patient")
    return block if isinstance(block, dict) else None


def patient_metrics(block: dict[str, Any], key: str) -> dict[str, Any] | None:
    """The METRICS of one patient-level row: clean, joint, worst_case, or a per-slice attack's aggregate."""
    m = block.get(key) if key in ("clean", *PATIENT_ONLY) else (block.get("attacks") or {}).get(key)
    return m if isinstance(m, dict) else None


def row_keys(blocks: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(key, label) in Table 1's order (clean, PGD, FGSM, CW, Strong, other attacks), then joint and
    worst case; only keys some block has."""
    attacks: list[str] = []
    for b in blocks:
        attacks += [k for k in b.get("attacks") or {} if k not in attacks]
    known = dict(TABLE1_COLUMNS)
    ordered = [k for k in known if k in attacks] + [k for k in attacks if k not in known]
    keys = [("clean", "Clean"), *[(k, known.get(k, k)) for k in ordered]]
    keys += [(k, label) for k, label in PATIENT_ONLY.items() if any(k in b for b in blocks)]
    return keys


def slices_text(block: dict[str, Any] | None) -> str:
    s = (block or {}).get("slices_per_patient")
    if not isinstance(s, dict):
        return DASH
    spread = f"range {s.get('min', '?')}–{s.get('max', '?')}"
    return f"median {s.get('median', '?')} ({spread}), mean {s.get('mean', '?')}"


def _failed_marks(results: dict[str, Any], label: str, footnotes: list[str]) -> dict[str, list[int]]:
    """key -> footnote numbers of the failed sanity checks that undermine a patient row (a per-slice
    attack's check undermines its patient aggregate too: it is built from the same adversarial slices)."""
    rows = {k for k, _ in row_keys([patient_of(results) or {}])}
    marks: dict[str, list[int]] = {}
    for check in results.get("sanity") or []:
        undermined = set(check.get("undermines") or []) & rows
        if check.get("passed", False) or not undermined:
            continue
        footnotes.append(f"{label}: sanity check FAILED: {check.get('check')}: {check.get('detail', '')}")
        for col in undermined:
            marks.setdefault(col, []).append(len(footnotes))
    return marks


def accuracy_table(
    blocks: dict[str, dict[str, Any] | None],
    *,
    cut: dict[str, bool],
    marks: dict[str, dict[str, list[int]]],
    caption: str,
    source: str,
) -> Table:
    """Rows = patient-level metrics, columns = models (label -> block): accuracy % [Wilson 95%]
    (correct/n), then the count of patients and of slices per patient."""
    present = [b for b in blocks.values() if b]
    rows = []
    for key, label in row_keys(present):
        row = [label]
        for name, b in blocks.items():
            m = patient_metrics(b, key) if b else None
            cell = pct_ci(m, bound=cut.get(name, False) and key != "clean")
            if m and isinstance(m.get("n"), int):
                cell += f" ({m.get('correct', '?')}/{m['n']})"
            if m and key in marks.get(name, {}):
                cell += " ⚠ FAIL" + "".join(f"[{i}]" for i in marks[name][key])
            row.append(cell)
        rows.append(row)
    rows.append(["Patients", *[str(b.get("n", DASH)) if b else DASH for b in blocks.values()]])
    rows.append(["Slices per patient", *[slices_text(b) for b in blocks.values()]])
    return Table(["Patient-level metric", *[f"{n} %" for n in blocks]], rows, caption=caption, source=source)


def sensitivity_table(
    blocks: dict[str, dict[str, Any] | None], *, cut: dict[str, bool], source: str
) -> Table:
    """Per model and true class: the patients' sensitivity (recall) % [Wilson 95%] (correct/n) under each
    row key; then how many malignant patients each key called normal (the missed cancer)."""
    present = [b for b in blocks.values() if b]
    keys = row_keys(present)
    rows = []
    for name, b in blocks.items():
        if not b:
            continue
        classes: list[str] = list(((patient_metrics(b, "clean") or {}).get("per_class") or {}).keys())
        for cls in classes:
            cells = []
            for key, _ in keys:
                pc = ((patient_metrics(b, key) or {}).get("per_class") or {}).get(cls) or {}
                cell = pct_ci(pc, "sensitivity", bound=cut.get(name, False) and key != "clean")
                n = pc.get("n", pc.get("support"))
                if cell != DASH and isinstance(n, int):
                    cell += f" ({pc.get('correct', round(pc['sensitivity'] * n))}/{n})"
                cells.append(cell)
            rows.append([name, cls, *cells])
        m2n = b.get("malignant_to_normal")
        if isinstance(m2n, dict):
            rows.append([name, "malignant called normal", *[str(m2n.get(k, DASH)) for k, _ in keys]])
    return Table(
        ["Model", "True class: sensitivity % [95% CI] (correct/n)", *[label for _, label in keys]],
        rows,
        caption="Patient-level sensitivity of each true class, and the number of malignant patients "
        "classified as normal (a missed cancer)",
        source=source,
    )


def threat_model_text(blocks: dict[str, dict[str, Any] | None]) -> str:
    """The patient threat model and the aggregation rule, once if both models share them."""
    parts = []
    for name, b in blocks.items():
        if not b:
            continue
        tm = b.get("threat_model") or {}
        joint = b.get("joint") if isinstance(b.get("joint"), dict) else {}
        text = (
            f"the adversary controls {tm.get('scope') or DEFAULT_SCOPE} ({fmt_threat(tm)}). Aggregation rule "
            f"'{b.get('rule', '?')}': {b.get('rule_text') or 'not recorded'}. Each attack row aggregates the "
            "per-slice attacks already run (every slice attacked for its own label); Joint attacks the "
            f"patient's aggregated decision, all of its slices at once ({joint.get('spec', 'not run')}); "
            "Worst-case counts a patient robust only if it is right clean and no attack flips it."
        )
        parts.append((name, text))
    if len({t for _, t in parts}) == 1:
        return "Patient threat model: " + parts[0][1]
    return " ".join(f"{name}: patient threat model: {t}" for name, t in parts)


def _notes(doc: Document, blocks: dict[str, dict[str, Any] | None]) -> None:
    """How the patients were formed (groups, mixed labels) and what the joint attack had to change."""
    for name, b in blocks.items():
        if not b:
            continue
        if b.get("groups_from") not in (None, "manifest"):
            doc.add(
                Para(
                    f"{name}: the split manifest names no patient groups ({b.get('groups_from')}): every "
                    "image is its own patient, so these numbers are the slice-level ones counted again.",
                    "warn",
                )
            )
        mixed = b.get("mixed_label_groups")
        if isinstance(mixed, int) and mixed:
            doc.add(
                Para(
                    f"{name}: {mixed} patient group(s) hold slices of two classes; their label is resolved "
                    f"by {b.get('label_rule', 'a rule not recorded')} (see audit.json 'mixed_label_groups').",
                    "warn",
                )
            )
        joint = b.get("joint") if isinstance(b.get("joint"), dict) else {}
        if joint.get("harmful_targeted"):
            doc.add(
                Para(
                    f"{name}: {joint['harmful_targeted']} malignant patient(s) the untargeted joint attack "
                    f"did not send to normal were attacked again, targeted at normal; "
                    f"{joint.get('harmful_found', '?')} of them reached it (counted in 'malignant called "
                    "normal')."
                )
            )
        changed = joint.get("slices_changed")
        if isinstance(changed, dict) and changed.get("n_flipped"):
            doc.add(
                Para(
                    f"{name}: the joint attack flipped {changed['n_flipped']} clean-correct patient(s); to "
                    f"do so it changed the prediction of a median of {changed.get('median', '?')} (at most "
                    f"{changed.get('max', '?')}) of their slices."
                )
            )


def section_patients(doc: Document, run: RunData) -> None:
    """Patient-level Table 1 beside the slice-level one; nothing when no results.json has `patient`."""
    blocks = {STAGE_LABELS[n]: patient_of(s.results) for n, s in run.stages.items()}
    if not any(blocks.values()):
        return
    doc.add(Heading("Table 1 per patient: test accuracy over patients (%)"))
    footnotes: list[str] = []
    cut, marks = {}, {}
    for name, stage in run.stages.items():
        label = STAGE_LABELS[name]
        cut[label] = budget_cut(stage.results) is not None
        if blocks[label]:
            marks[label] = _failed_marks(stage.results or {}, label, footnotes)
    srcs = [f"{run.rel(s.results_path)} 'patient'" for s in run.stages.values() if patient_of(s.results)]
    doc.add(Para(threat_model_text(blocks)))
    doc.add(
        accuracy_table(
            blocks,
            cut=cut,
            marks=marks,
            caption="Accuracy over test patients [Wilson 95% interval over patients] (correct/patients); "
            "Table 1 above counts slices"
            + (
                f"; {UPPER_BOUND_MARK} = upper bound (attacks below full strength)"
                if any(cut.values())
                else ""
            ),
            source="; ".join(srcs),
        )
    )
    doc.add(sensitivity_table(blocks, cut=cut, source="; ".join(srcs)))
    _notes(doc, blocks)
    for i, note in enumerate(footnotes, 1):
        doc.add(Para(f"[{i}] {note}", "warn"))
