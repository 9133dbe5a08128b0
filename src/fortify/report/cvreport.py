"""The cross-validation report: CV_DIR/report.md and report.html from CV_DIR/summary.json (fortify-cv/1).

Per Table 1 number and model: mean ± std over the folds with a t-interval, every fold's value, the
accuracy pooled over all images (each scored by the fold model that did not train on it) with its Wilson
interval, and the study's figure beside. Like build_report, it only shows what the file holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fortify.errors import ConfigError
from fortify.fileio import atomic_write_text, read_json
from fortify.report.caveats import UPPER_BOUND_MARK
from fortify.report.doc import Document, Heading, Para, Table, render_html, render_markdown
from fortify.report.fmt import DASH, STAGE_LABELS, TABLE1_COLUMNS, fmt_ci, fmt_diff, fmt_p, pct, pct_ci
from fortify.report.paired import comparison_table, patient_comparison_table
from fortify.report.patient_section import accuracy_table, row_keys, sensitivity_table, threat_model_text
from fortify.report.study import STUDY_COLUMNS, study_for

CLEAN_ONLY = ("clean", "benign_recall", "balanced_accuracy")  # not attacked: never upper bounds
LABELS = {
    **dict(TABLE1_COLUMNS),
    "benign_recall": "Benign recall (clean)",
    "balanced_accuracy": "Balanced acc (clean)",
}


def _ordered(keys: list[str]) -> list[str]:
    """Table 1's order, then other attacks, then the clean per-class summaries."""
    head = [k for k, _ in TABLE1_COLUMNS if k in keys]
    tail = [k for k in ("benign_recall", "balanced_accuracy") if k in keys]
    return head + [k for k in keys if k not in head and k not in tail] + tail


def _mean_std(s: dict[str, Any], mark: str) -> str:
    if not isinstance(s.get("mean"), (int, float)):
        return DASH
    text = f"{mark}{pct(s['mean'])}"
    return text + (f" ± {pct(s['std'])}" if isinstance(s.get("std"), (int, float)) else "")


def _model_table(summary: dict[str, Any], model: str, study: dict[str, Any] | None) -> Table:
    k = int(summary.get("k") or 0)
    stats = (summary.get("summary") or {}).get(model) or {}
    pooled = (summary.get("pooled") or {}).get(model) or {}
    srow = ((study or {}).get("rows") or {}).get(model) or {}
    cut = summary.get("full_strength") is False
    rows = []
    for key in _ordered(list(stats)):
        s = stats[key]
        mark = UPPER_BOUND_MARK if cut and key not in CLEAN_ONLY else ""
        values = list(s.get("values") or []) + [None] * k
        rows.append(
            [
                LABELS.get(key, key),
                _mean_std(s, mark),
                fmt_ci(s.get("ci")).strip() or DASH,
                *[pct(v) for v in values[:k]],
                pct_ci(pooled.get(key), bound=bool(mark)),
                *([pct(srow[key] / 100) if key in STUDY_COLUMNS and key in srow else DASH] if study else []),
            ]
        )
    return Table(
        [
            "Metric (%)",
            "Mean ± std",
            "95% t-interval",
            *[f"Fold {i}" for i in range(k)],
            "Pooled [Wilson 95%]",
            *(["Study"] if study else []),
        ],
        rows,
        caption=f"{STAGE_LABELS.get(model, model)}: {k} folds",
        source=f"cv/summary.json 'summary.{model}', 'pooled.{model}'"
        + (f"; study: {study.get('path')}" if study else ""),
    )


def _per_class_table(summary: dict[str, Any], model: str) -> Table | None:
    """Recall of each class pooled over every fold's test images, clean and under each attack."""
    per_class = (((summary.get("pooled") or {}).get(model) or {}).get("per_class")) or {}
    if not per_class:
        return None
    keys = _ordered([k for k in next(iter(per_class.values()))])
    cut = summary.get("full_strength") is False
    rows = []
    for name, metrics in per_class.items():
        cells = []
        for key in keys:
            m = metrics.get(key) or {}
            bound = cut and key not in CLEAN_ONLY
            cells.append(f"{pct_ci(m, 'recall', bound=bound)} ({m.get('correct', '?')}/{m.get('n', '?')})")
        rows.append([name, *cells])
    return Table(
        ["Class", *[LABELS.get(k, k) for k in keys]],
        rows,
        caption=f"{STAGE_LABELS.get(model, model)}: recall (sensitivity) of each true class, pooled over all "
        "folds' test images, % [Wilson 95%] (correct/n)",
        source=f"cv/summary.json 'pooled.{model}.per_class'",
    )


def _sentinel_table(summary: dict[str, Any]) -> Table:
    rows = []
    for f in summary.get("folds") or []:
        s = f.get("sentinel") or {}
        clean = (f.get("normal") or {}).get("clean")
        rows.append(
            [
                str(f.get("fold", "?")),
                pct_ci(s) + (" ⚠ LEAKAGE" if s.get("warning") else ""),
                pct(s.get("neighbour_share")),
                pct(clean),
                str(s.get("warning") or DASH),
            ]
        )
    acc = ((summary.get("summary") or {}).get("sentinel") or {}).get("accuracy") or {}
    rows.append(["mean ± std", _mean_std(acc, "") + fmt_ci(acc.get("ci")), DASH, DASH, DASH])
    return Table(
        ["Fold", "1-NN sentinel % [95% CI]", "File-number neighbour share %", "Normal clean %", "Warning"],
        rows,
        caption="Leakage sentinel per fold: a nearest-neighbour classifier on raw pixels (it can only "
        "recognise, not generalise); a model that does not clearly beat it may be recognising near-copies.",
        source="cv/summary.json 'folds[].sentinel'",
    )


def _fold_comparison_table(summary: dict[str, Any]) -> Table | None:
    folds = [f for f in summary.get("folds") or [] if f.get("comparison")]
    if not folds:
        return None
    keys: list[str] = []
    for f in folds:
        keys += [k for k in f["comparison"] if k not in keys]
    rows = []
    for key in keys:
        cells = []
        for f in folds:
            m = f["comparison"].get(key) or {}
            cells.append(
                f"{fmt_diff(m.get('difference'), m.get('difference_ci'))} (p {fmt_p(m.get('p_value'))})"
            )
        rows.append([key, *cells])
    return Table(
        ["Metric", *[f"Fold {f.get('fold', '?')}" for f in folds]],
        rows,
        caption="Adversarial − normal per fold, points [95% Newcombe interval] (exact McNemar p)",
        source="cv/summary.json 'folds[].comparison'",
    )


def _patient_section(doc: Document, summary: dict[str, Any]) -> None:
    """Patient-level numbers pooled over the folds (summary["patient"]); nothing when no fold had them."""
    pooled = summary.get("patient") or {}
    if not any(isinstance(b, dict) for b in pooled.values()):
        return
    blocks = {STAGE_LABELS.get(m, m): pooled.get(m) for m in ("normal", "adversarial")}
    cut = {name: summary.get("full_strength") is False for name in blocks}
    per_fold = {name: "+".join(map(str, b.get("patients_per_fold") or [])) for name, b in blocks.items() if b}
    doc.add(Heading("Patient level, pooled over the folds"))
    doc.add(Para(threat_model_text(blocks)))
    doc.add(
        accuracy_table(
            blocks,
            cut=cut,
            marks={},
            caption="Accuracy over all folds' test patients, each tested once by the fold model that did not "
            "train on it [Wilson 95% interval over patients] (correct/patients); patients per fold: "
            + "; ".join(f"{name} {counts}" for name, counts in per_fold.items()),
            source="cv/summary.json 'patient' (from every fold's results.json 'patient.per_patient')",
        )
    )
    fold_table = _patient_fold_table(blocks, cut, summary.get("folds") or [])
    if fold_table is not None:
        doc.add(fold_table)
    doc.add(sensitivity_table(blocks, cut=cut, source="cv/summary.json 'patient.<model>.*.per_class'"))


def _patient_fold_table(
    blocks: dict[str, dict[str, Any] | None], cut: dict[str, bool], folds: list[dict[str, Any]]
) -> Table | None:
    """Per model and outcome, the correct patients in each fold: the spread the pooled row hides (a fold
    whose scans the model gets wrong, or a joint attack that only bites on some folds)."""
    names = [f"Fold {f.get('fold', i)}" for i, f in enumerate(folds)]
    rows = []
    for name, b in blocks.items():
        per_fold, sizes = (b or {}).get("correct_per_fold"), (b or {}).get("patients_per_fold")
        if not isinstance(per_fold, dict) or not isinstance(sizes, list) or len(sizes) != len(names):
            continue  # a summary written before the per-fold counts: the pooled table stands alone
        for key, label in row_keys([b]):
            counts = per_fold.get(key)
            if not isinstance(counts, list) or len(counts) != len(sizes):
                continue
            mark = UPPER_BOUND_MARK if cut.get(name) and key != "clean" else ""
            pairs = zip(counts, sizes, strict=True)
            cells = [f"{mark}{pct(c / n)} ({c}/{n})" if n else DASH for c, n in pairs]
            rows.append([name, label, *cells])
    if not rows:
        return None
    return Table(
        ["Model", "Patient-level metric", *names],
        rows,
        caption="Patients right in each fold, % (correct/patients): each fold's test patients, scored by "
        "the fold model that did not train on them",
        source="cv/summary.json 'patient.<model>.correct_per_fold' over 'patients_per_fold'",
    )


def cv_document(
    summary: dict[str, Any], title: str, study: dict[str, Any] | None, study_note: str | None = None
) -> Document:
    doc = Document(title)
    if summary.get("synthetic"):
        doc.add(Para("SYNTHETIC DATA (phantom) — not real CT scans", "banner"))
    for f in summary.get("folds") or []:
        warning = (f.get("sentinel") or {}).get("warning")
        if warning:
            doc.add(Para(f"fold {f.get('fold', '?')}: {warning}", "alarm"))
    for w in summary.get("warnings") or []:
        doc.add(Para(w, "warn"))
    if summary.get("full_strength") is False:
        doc.add(
            Para(
                f"{UPPER_BOUND_MARK} = upper bound: in at least one fold the attacks ran below full "
                "strength, so the robust accuracies are not robustness measurements.",
                "warn",
            )
        )
    k = summary.get("k", "?")
    doc.add(
        Para(
            f"{k}-fold cross-validation: the whole study (split, training, evaluation) run once per fold. "
            "Mean ± std and the t-interval are over the fold values (folds share training images, so the "
            "interval is optimistic). Pooled: every image is in exactly one test fold, scored by the model "
            "that did not train on it; its Wilson interval covers all images at once."
        )
    )
    for model in ("normal", "adversarial"):
        doc.add(Heading(f"{STAGE_LABELS[model]}: Table 1 numbers across folds"))
        doc.add(_model_table(summary, model, study))
        per_class = _per_class_table(summary, model)
        if per_class is not None:
            doc.add(per_class)
    if study_note:
        doc.add(Para(study_note, "note"))
    if study:
        doc.add(
            Para(
                f"Study rows: {study.get('path')} ({' '.join(str(study.get('citation', '')).split())})",
                "source",
            )
        )
    _patient_section(doc, summary)
    doc.add(Heading("Leakage sentinel per fold"))
    doc.add(_sentinel_table(summary))
    doc.add(Heading("Paired comparison: adversarial vs normal"))
    pc = summary.get("pooled_comparison")
    if isinstance(pc, dict) and pc.get("metrics"):
        doc.add(comparison_table(pc, "cv/summary.json 'pooled_comparison' (all folds' test images)"))
        patients = patient_comparison_table(
            pc, "cv/summary.json 'pooled_comparison.patient' (all folds' patients)"
        )
        if patients is not None:
            doc.add(patients)
    else:
        doc.add(Para("No pooled paired comparison (per-sample records missing).", "warn"))
    per_fold = _fold_comparison_table(summary)
    if per_fold:
        doc.add(per_fold)
    return doc


def build_cv_report(cv_dir: str | Path) -> tuple[Path, Path]:
    """Write CV_DIR/report.md and CV_DIR/report.html from CV_DIR/summary.json; return both paths."""
    root = Path(cv_dir).resolve()
    path = root / "summary.json"
    if not path.is_file():
        raise ConfigError(f"no cross-validation summary at {path}")
    try:
        summary = read_json(path)
    except ValueError as e:
        raise ConfigError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(summary, dict) or summary.get("format") != "fortify-cv/1":
        raise ConfigError(f"{path} is not a fortify-cv/1 summary")
    audit_path = root.parent / "audit.json"  # RUN_DIR/cv -> RUN_DIR/audit.json
    try:
        audit = read_json(audit_path) if audit_path.is_file() else None
    except ValueError:
        audit = None
    study, study_note = study_for(audit)
    title = f"fortify cross-validation report: {root.parent.name}/{root.name}"
    doc = cv_document(summary, title, study, study_note)
    md = atomic_write_text(root / "report.md", render_markdown(doc, root))
    html = atomic_write_text(root / "report.html", render_html(doc))
    return md, html
