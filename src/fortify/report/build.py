"""Assemble the report from a run directory: Table 1 beside the study, threat model, provenance, sanity
checks, per-class numbers, figures. Shows what was measured, says where each number came from, and never
fills a cell the run did not produce."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

from fortify.fileio import atomic_write_text, read_json
from fortify.report import figures
from fortify.report.caveats import add_alarms
from fortify.report.doc import Document, Figure, Heading, Para, Table, render_html, render_markdown
from fortify.report.fmt import STAGE_LABELS
from fortify.report.folder_swap import replacing_folder
from fortify.report.headline import section_sanity, section_table1
from fortify.report.paired import section_comparison
from fortify.report.patient_section import section_patients
from fortify.report.run_files import RunData, load_run
from fortify.report.sections import (
    metric_panels,
    section_per_class,
    section_provenance,
    section_scores,
    section_threat_model,
    section_transfer,
)
from fortify.report.study import is_study_data, study_for


def section_figures(doc: Document, run: RunData, fig_dir: Path) -> None:
    doc.add(Heading("Confusion matrices"))
    for name, stage in run.stages.items():
        r = stage.results
        if not r:
            continue
        classes = (r.get("data") or {}).get("classes") or []
        panels = [(k, m) for k, m in metric_panels(r) if m.get("confusion")]
        if panels:
            path = figures.confusion_grid(
                panels, classes, STAGE_LABELS[name], fig_dir / f"confusion_{name}.png"
            )
            doc.add(
                Figure(
                    path,
                    f"{STAGE_LABELS[name]}: confusion matrices (rows true, columns predicted)",
                    f"{run.rel(stage.results_path)} 'confusion'",
                )
            )

    doc.add(Heading("Accuracy vs eps"))
    series, norm, srcs, cumulative = [], "linf", [], False
    for name, stage in run.stages.items():
        for key, c in ((stage.results or {}).get("curves") or {}).items():
            cumulative = cumulative or bool(c.get("cumulative"))
            series.append((f"{STAGE_LABELS[name]}: {key}", c.get("points") or []))
            norm = c.get("norm", norm)
            srcs.append(f"{run.rel(stage.results_path)} curves.{key} ({c.get('spec', '?')})")
    if series:
        doc.add(
            Figure(
                figures.eps_curves(series, norm, fig_dir / "accuracy_vs_eps.png"),
                "Accuracy on the test split vs attack budget"
                + (
                    " (an image counts as robust at an eps only if the attack failed at every eps up to it)"
                    if cumulative
                    else ""
                ),
                "; ".join(srcs),
            )
        )
    else:
        doc.add(Para("No accuracy-vs-eps curves were recorded.", "warn"))

    doc.add(Heading("Training curves"))
    for name, stage in run.stages.items():
        path = figures.training_curves(stage.metrics, STAGE_LABELS[name], fig_dir / f"training_{name}.png")
        if path:
            doc.add(Figure(path, f"{STAGE_LABELS[name]}: training curves", f"{name}/metrics.jsonl"))

    like = " (like the study's Fig. 3-6)" if is_study_data(run.audit) else ""  # only its own data
    doc.add(Heading(f"Attacked scans{like}"))
    for name, stage in run.stages.items():
        r = stage.results or {}
        if not stage.examples_path:
            continue
        attacks = (r.get("examples") or {}).get("attacks") or list((r.get("attacks") or {}).keys())
        classes = (r.get("data") or {}).get("classes") or []
        path = figures.example_scans(
            stage.examples_path, attacks, classes, STAGE_LABELS[name], fig_dir / f"examples_{name}.png"
        )
        if path:
            doc.add(
                Figure(
                    path,
                    f"{STAGE_LABELS[name]}: test scans per class; clean, then per attack the adversarial "
                    "scan and its perturbation amplified to full range; titles give the predicted class "
                    "and its softmax confidence (red = wrong)",
                    run.rel(stage.examples_path),
                )
            )


def build_document(run: RunData, fig_dir: Path) -> Document:
    name = run.root.name
    doc = Document(f"fortify report: {name}")
    if run.synthetic:
        doc.add(Para("SYNTHETIC DATA (phantom) — not real CT scans", "banner"))
    add_alarms(doc, run)  # leakage suspected: said once, before any number (Table 1 marks the cells)
    cfg = run.config or {}
    doc.add(
        Para(
            f"Run directory {run.root}; profile {cfg.get('profile', '?')}, "
            f"defense {cfg.get('defense', '?')}, "
            f"report built {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}. Every number below "
            "was "
            "read from a file in the run directory (named under each table); nothing is recomputed or "
            "estimated here, and the report claims nothing beyond these measurements on this test split."
        )
    )
    if cfg.get("profile") == "smoke":
        doc.add(
            Para(
                "smoke profile: a tiny model trained for one epoch on a few images per class, to check that "
                "the pipeline runs end to end. Its accuracies are not results.",
                "warn",
            )
        )
    for m in run.missing:
        doc.add(Para(f"missing: {m}", "warn"))
    study, study_note = study_for(run.audit)
    section_table1(doc, run, study, study_note)
    section_patients(doc, run)  # beside the slice-level Table 1; absent for results without patients
    section_comparison(doc, run)
    section_sanity(doc, run)
    section_threat_model(doc, run)
    section_provenance(doc, run)
    section_scores(doc, run)
    section_per_class(doc, run)
    section_figures(doc, run, fig_dir)
    section_transfer(doc, run)
    section_extras(doc, run, fig_dir)
    return doc


def section_extras(doc: Document, run: RunData, fig_dir: Path) -> None:
    """The stages beyond the study (reproduce --extras), each from ROOT/<name>/<name>.json if present."""
    from fortify.report.certify_section import section_certify
    from fortify.report.detect_section import section_detect
    from fortify.report.explain_section import section_explain

    for name in ("explain", "detect", "certify"):
        path = run.root / name / f"{name}.json"
        if not path.is_file():
            continue
        try:
            payload = read_json(path)
        except Exception as e:  # a damaged file is reported, not fatal to the rest of the report
            doc.add(Para(f"{run.rel(path)} unreadable ({type(e).__name__}); section left out", "warn"))
            continue
        source = run.rel(path)
        if name == "explain":
            section_explain(doc, payload, source, base_dir=path.parent, fig_dir=fig_dir)
        elif name == "detect":
            section_detect(doc, payload, source, fig_dir=fig_dir)
        else:
            section_certify(doc, payload, source, fig_dir=fig_dir)


def build_report(run_dir: str | Path) -> dict[str, Path]:
    """Write RUN_DIR/report/{report.md, report.html, figures/*.png}; return their paths by name.

    Figures are drawn into a scratch folder first; only when everything has been drawn and rendered do
    they replace the old figures (stale ones must not linger) and the new md/html land, so a failure
    leaves the previous report intact."""
    run = load_run(run_dir)
    report_dir = run.root / "report"
    fig_dir = report_dir / "figures"
    with replacing_folder(fig_dir, ".figures-") as scratch:
        doc = build_document(run, scratch)
        md_text, html_text = render_markdown(doc, scratch), render_html(doc)
    out = {
        "markdown": atomic_write_text(report_dir / "report.md", md_text),
        "html": atomic_write_text(report_dir / "report.html", html_text),
    }
    out.update({p.stem: p for p in sorted(fig_dir.glob("*.png"))})
    return out


_INTERVAL = re.compile(r" \[-?[0-9.]+, -?[0-9.]+\]")


def table1_summary(run_dir: str | Path, *, intervals: bool = True) -> Table:
    """Table 1 alone (for the CLI's closing summary). intervals=False drops the '[lo, hi]' brackets
    (for a narrow terminal) and keeps every mark: ≤ (upper bound), ⚠ FAIL[i], ⚠ LEAKAGE."""
    run = load_run(run_dir)
    doc = Document("")
    section_table1(doc, run, study_for(run.audit)[0])
    table = next(b for b in doc.blocks if isinstance(b, Table))
    if not intervals:
        table.rows = [[_INTERVAL.sub("", c) for c in row] for row in table.rows]
    return table
