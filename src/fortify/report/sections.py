"""The report's detail sections: threat model, data provenance, robustness scores, per-class numbers,
transfer. Each reads the run's files and names them; none computes a metric."""

from __future__ import annotations

from typing import Any

from fortify.report.caveats import UPPER_BOUND_MARK, budget_cut
from fortify.report.doc import Document, Heading, Para, Table
from fortify.report.fmt import DASH, STAGE_LABELS, fmt_ci, fmt_eps, fmt_threat, num, pct, pct_ci
from fortify.report.run_files import RunData


def section_threat_model(doc: Document, run: RunData) -> None:
    doc.add(Heading("Threat model"))
    for name, stage in run.stages.items():
        r = stage.results
        if not r:
            continue
        doc.add(
            Para(
                f"{STAGE_LABELS[name]}: headline budget {fmt_threat(r.get('threat_model'))}; "
                f"white-box attacks on the evaluated checkpoint; runtime {r.get('runtime', {})}."
            )
        )
        rows = []
        for key, a in (r.get("attacks") or {}).items():
            params = a.get("params") or {}
            extra = f"CW L2 budget max_l2={params['max_l2']}" if "max_l2" in params else ""
            rows.append(
                [
                    key,
                    str(a.get("spec", DASH)),
                    fmt_threat(a.get("threat_model")),
                    ", ".join(f"{k}={v}" for k, v in params.items()),
                    extra,
                ]
            )
        for key, c in (r.get("curves") or {}).items():
            rows.append(
                [
                    f"curve:{key}",
                    str(c.get("spec", DASH)),
                    f"{c.get('norm', '?')}, eps swept",
                    "eps = "
                    + ", ".join(
                        fmt_eps(p[0], c.get("norm", "linf")).split(" ")[0] for p in c.get("points", [])
                    ),
                    "",
                ]
            )
        doc.add(
            Table(
                ["Attack", "Spec (parse_spec reproduces it)", "Threat model", "Parameters", "Note"],
                rows,
                source=f"{run.rel(stage.results_path)} 'attacks' and 'curves'",
            )
        )
        train = stage.train_config or {}
        if train:
            doc.add(
                Para(
                    f"{STAGE_LABELS[name]} was trained with mode={train.get('mode', '?')}, "
                    f"eps={fmt_eps(train.get('eps'))}, model={train.get('model', '?')}, "
                    f"image_size={train.get('image_size', '?')}, epochs={train.get('epochs', '?')}, "
                    f"seed={train.get('seed', '?')}.",
                    "source",
                )
            )


def _split_sizes(split: dict[str, Any]) -> list[list[str]]:
    classes = (split.get("dataset") or {}).get("classes") or []
    rows = []
    for part, entries in (split.get("splits") or {}).items():
        counts = [0] * len(classes)
        for e in entries:
            lab = e.get("label")
            if isinstance(lab, int) and 0 <= lab < len(counts):
                counts[lab] += 1
        rows.append([part, str(len(entries)), *map(str, counts)])
    return rows


def section_provenance(doc: Document, run: RunData) -> None:
    doc.add(Heading("Data provenance"))
    cfg = run.config or {}
    items = [
        ("data", cfg.get("data")),
        ("profile", cfg.get("profile")),
        ("defense", cfg.get("defense")),
        ("seed", cfg.get("seed")),
        ("image size", cfg.get("image_size")),
        ("limit per class", cfg.get("limit_per_class")),
    ]
    for stage in run.stages.values():
        d = (stage.results or {}).get("data") or {}
        if d:
            items += [
                ("dataset root (evaluation)", d.get("root")),
                ("classes", ", ".join(d.get("classes", []))),
                ("test images evaluated", d.get("n")),
            ]
            break
    doc.add(
        Table(
            ["Item", "Value"],
            [[k, str(v)] for k, v in items if v is not None],
            source="config.yaml, results.json 'data'",
        )
    )
    if run.synthetic:
        doc.add(
            Para(
                "SYNTHETIC DATA: these numbers come from fortify's procedural phantom, not from CT scans. "
                "They say nothing about lung cancer classification.",
                "warn",
            )
        )
    if run.split:
        classes = (run.split.get("dataset") or {}).get("classes") or []
        doc.add(
            Table(
                ["Split", "Images", *classes],
                _split_sizes(run.split),
                caption=f"Split (seed {run.split.get('seed', '?')}, "
                f"fractions {run.split.get('fractions', '?')}, "
                f"{len(run.split.get('dropped_duplicates') or [])} exact duplicates dropped, "
                f"{run.split.get('near_duplicate_groups', '?')} near-duplicate groups kept on one side)",
                source="split.json",
            )
        )
    if run.audit:
        section_audit(doc, run.audit)


def section_audit(doc: Document, audit: dict[str, Any]) -> None:
    """The data audit (fortify-audit/1): per-class counts and sizes, duplicates, shortcut warnings."""
    ds = audit.get("dataset") or {}
    counts = audit.get("counts") or {}
    sizes = audit.get("sizes") or {}
    if isinstance(counts, dict) and counts:
        rows = []
        for cls, n in counts.items():
            sz = sizes.get(cls) or {}
            rows.append(
                [cls, str(n), ", ".join(f"{k} ({v})" for k, v in sz.items()) if isinstance(sz, dict) else ""]
            )
        doc.add(
            Table(
                ["Class", "Images", "Original sizes (count)"], rows, caption="Data audit", source="audit.json"
            )
        )
    exact = audit.get("exact_duplicates") or {}
    near = audit.get("near_duplicates") or {}
    items = [
        ("dataset root", ds.get("root")),
        ("files", ds.get("n_files")),
        ("usable images", ds.get("n_images")),
        ("unreadable files", len(audit.get("unreadable") or [])),
        ("exact-duplicate pairs", exact.get("n_pairs")),
        ("exact-duplicate groups", exact.get("n_groups")),
        ("near-duplicate groups", near.get("n_groups")),
        ("images in near-duplicate groups", near.get("images_in_groups")),
    ]
    rows = [[k, str(v)] for k, v in items if v is not None]
    if rows:
        doc.add(Table(["Audit item", "Value"], rows, source="audit.json"))
    for w in audit.get("warnings") or []:
        doc.add(Para(f"audit warning: {w if isinstance(w, str) else w.get('message', w)}", "warn"))


# Optional per-attack fields (newer results.json): (key, column header); shown when any attack has one.
EXTRA_ATTACK_FIELDS = (
    ("gradient_evaluations", "Gradient evaluations"),
    ("verdict_mismatches", "Verdict mismatches"),
    ("reattacked_fp32", "Re-attacked in fp32"),
    ("recovered_by_reattack", "Recovered by re-attack"),
)


def section_scores(doc: Document, run: RunData) -> None:
    doc.add(Heading("Robustness scores"))
    for name, stage in run.stages.items():
        r = stage.results
        if not r:
            continue
        attacks = r.get("attacks") or {}
        bound = budget_cut(r) is not None
        extras = [(k, h) for k, h in EXTRA_ATTACK_FIELDS if any(k in (a or {}) for a in attacks.values())]
        rows = []
        for key, a in attacks.items():
            p = a.get("perturbation") or {}
            rows.append(
                [
                    key,
                    pct_ci(a, bound=bound),
                    pct(a.get("balanced_accuracy")),
                    pct(a.get("success_rate")),
                    num(p.get("l2_median")),
                    num(p.get("l2_mean")),
                    num(p.get("linf_median")),
                    num(a.get("cw_median_l2")),
                    num(a.get("seconds"), 3),
                    *[str(a[k]) if a.get(k) is not None else DASH for k, _ in extras],
                ]
            )
        doc.add(
            Table(
                [
                    "Attack",
                    "Accuracy % [95% CI]",
                    "Balanced acc %",
                    "Success rate %",
                    "L2 median",
                    "L2 mean",
                    "L-inf median",
                    "CW median L2 (unbounded)",
                    "Seconds",
                    *[h for _, h in extras],
                ],
                rows,
                caption=STAGE_LABELS[name]
                + (f" ({UPPER_BOUND_MARK} = upper bound: {budget_cut(r)})" if bound else ""),
                source=f"{run.rel(stage.results_path)} 'attacks'",
            )
        )


def metric_panels(results: dict[str, Any], *, combined: bool = True) -> list[tuple[str, dict[str, Any]]]:
    """(name, METRICS) in report order: clean, each attack, [combined,] worst case; missing ones dropped."""
    panels = [("clean", results.get("clean")), *(results.get("attacks") or {}).items()]
    if combined:
        panels.append(("combined", results.get("combined")))
    panels.append(("worst_case", results.get("worst_case")))
    return [(k, m) for k, m in panels if m]


def section_per_class(doc: Document, run: RunData) -> None:
    doc.add(Heading("Per-class sensitivity / specificity under attack"))
    for name, stage in run.stages.items():
        r = stage.results
        if not r:
            continue
        classes = (r.get("data") or {}).get("classes") or []
        panels = metric_panels(r, combined=False)
        rows = []
        for cls in classes:
            row = [cls]
            for _, m in panels:
                pc = (m.get("per_class") or {}).get(cls) or {}
                row.append(f"{pct_ci(pc, 'sensitivity')} / {pct_ci(pc, 'specificity')}")
            rows.append(row)
        doc.add(
            Table(
                ["Class (sens % / spec % [95% CI])", *[k for k, _ in panels]],
                rows,
                caption=STAGE_LABELS[name],
                source=f"{run.rel(stage.results_path)} 'per_class'",
            )
        )
        m2n = r.get("malignant_to_normal") or {}
        if m2n:
            doc.add(
                Table(
                    ["Malignant scans predicted normal", *m2n.keys()],
                    [["count", *map(str, m2n.values())]],
                    source=f"{run.rel(stage.results_path)} 'malignant_to_normal'",
                )
            )
            worst = max((v for k, v in m2n.items() if k != "clean" and isinstance(v, int)), default=0)
            if worst:
                doc.add(
                    Para(
                        f"{STAGE_LABELS[name]}: up to {worst} malignant test scans were classified as normal "
                        "under attack (a missed cancer), against "
                        f"{m2n.get('clean', '?')} on clean scans.",
                        "warn",
                    )
                )


def section_transfer(doc: Document, run: RunData) -> None:
    doc.add(Heading("Transfer"))
    pairs = (run.transfer or {}).get("pairs") or []
    if not pairs:
        doc.add(Para("No transfer evaluation was recorded.", "warn"))
        return
    rows = [
        [
            f"{p.get('source')} → {p.get('target')}",
            str(p.get("attack", DASH)),
            pct(p.get("transfer_accuracy")) + fmt_ci(p.get("transfer_accuracy_ci")),
            pct(p.get("white_box_accuracy")) + fmt_ci(p.get("white_box_accuracy_ci")),
            str(p.get("n", DASH)),
        ]
        for p in pairs
    ]
    doc.add(
        Table(
            [
                "Crafted on → evaluated on",
                "Attack",
                "Transfer accuracy %",
                "White-box accuracy % (target)",
                "n",
            ],
            rows,
            source="transfer.json",
        )
    )
