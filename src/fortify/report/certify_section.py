"""The randomized-smoothing section: certified vs empirical accuracy by L2 radius, abstentions, per class,
the consistency check and the cost, read from certify.json (fortify.certify.run_certify). Computes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fortify.report.doc import Document, Figure, Heading, Para, Table
from fortify.report.figures.certify import certified_accuracy_figure
from fortify.report.fmt import DASH, fmt_eps, num, pct_ci


def _radius_label(r: float, payload: dict[str, Any]) -> str:
    tm = payload.get("threat_model") or {}
    eps = tm.get("eps")
    eps_text = f"{eps * 255:.3g}/255" if isinstance(eps, (int, float)) else "eps"
    marks = []
    if r == 0:
        marks.append("clean (radius 0)")
    if any(abs(r - x) < 1e-9 for x in payload.get("reported_radii") or []):
        marks.append("reported")
    if isinstance(tm.get("l2_ball"), (int, float)) and abs(r - tm["l2_ball"]) < 1e-9:
        marks.append(f"eps*sqrt(d)/2, fortify's L2 budget at L-inf {eps_text}")
    if isinstance(tm.get("l2_equivalent"), (int, float)) and abs(r - tm["l2_equivalent"]) < 1e-9:
        marks.append(f"eps*sqrt(d): contains the L-inf {eps_text} ball")
    return "; ".join(marks) or DASH


def section_certify(doc: Document, payload: dict[str, Any], source: str, fig_dir: Path | None = None) -> None:
    """Add the section; with `fig_dir` (the report's figures folder) also the curve figure."""
    doc.add(Heading("Randomized smoothing (certified robustness)"))
    _intro(doc, payload)
    _radius_table(doc, payload, source)
    _per_class_table(doc, payload, source)
    _sanity(doc, payload)
    _cost(doc, payload)
    if fig_dir is not None and (payload.get("curve") or {}).get("points"):
        path = certified_accuracy_figure(payload, Path(fig_dir) / "certified_accuracy.png")
        doc.add(
            Figure(
                path,
                "Certified accuracy vs L2 radius (step), empirical accuracy under smoothed PGD (points), "
                "and the L-inf threat model's L2 radii",
                f"{source} 'curve', 'empirical'",
            )
        )


def _intro(doc: Document, payload: dict[str, Any]) -> None:
    """The certification settings, how to read the numbers, and warnings about the model and images."""
    data = payload.get("data") or {}
    model = payload.get("model") or {}
    doc.add(
        Para(
            f"Smoothed classifier of {model.get('label', '?')} ({model.get('name', '?')}). CERTIFY (Cohen, "
            f"Rosenfeld & Kolter 2019): sigma={payload.get('sigma')}, n0={payload.get('n0')} selection "
            f"votes, n={payload.get('n')} estimation votes, alpha={payload.get('alpha')} (each certificate "
            f"fails with probability at most alpha), seed {payload.get('seed')}, on {data.get('n', '?')} "
            f"test images at {data.get('image_size', '?')} px; runtime {payload.get('runtime', {})}. "
            "Certified accuracy at radius r counts images whose smoothed prediction is right and certified "
            "for every L2 perturbation up to r; abstentions count as wrong. Intervals are Wilson 95% over "
            "test images."
        )
    )
    if "NOT trained" in str(model.get("label", "")):
        doc.add(Para("The certified model was not trained with Gaussian noise at this sigma.", "warn"))
    if data.get("subset"):
        doc.add(Para(f"Test images: {data['subset']}; not the whole test split.", "warn"))
    if data.get("synthetic"):
        doc.add(Para("SYNTHETIC phantom data: these are not results on CT scans.", "warn"))


def _radius_table(doc: Document, payload: dict[str, Any], source: str) -> None:
    """Certified vs empirical accuracy by radius, then abstentions and the threat model's L2 radii."""
    tm = payload.get("threat_model") or {}
    emp_by_r = {round(e["radius"], 9): e for e in (payload.get("empirical") or {}).get("at") or []}
    rows = []
    for c in payload.get("certified") or []:
        e = emp_by_r.get(round(c["radius"], 9)) or {}
        rows.append(
            [
                num(c["radius"], 4),
                _radius_label(c["radius"], payload),
                pct_ci(c),
                pct_ci(e),
                pct_ci(e.get("predict")),
                str(len(e.get("broken", []))) if e else DASH,
            ]
        )
    attack = (payload.get("empirical") or {}).get("attack") or {}
    doc.add(
        Table(
            [
                "L2 radius",
                "Which radius",
                "Certified acc % [95% CI]",
                "Empirical acc % (majority vote)",
                "Empirical acc % (PREDICT)",
                "Certified points broken",
            ],
            rows,
            caption=(
                f"Certified vs empirical accuracy; empirical = {attack.get('name', '?')}, "
                f"{attack.get('steps', '?')} steps, {attack.get('samples', '?')} noise samples per step, "
                f"judged with {attack.get('votes', '?')} votes (an upper bound on the smoothed model's "
                "robust accuracy)"
            ),
            source=f"{source} 'certified', 'empirical'",
        )
    )
    abstain = payload.get("abstain") or {}
    doc.add(
        Para(
            f"Abstained on {abstain.get('count', '?')} of {abstain.get('n', '?')} test images "
            f"({pct_ci(abstain, 'rate')} %). Largest radius these settings can certify: "
            f"{num(payload.get('max_certifiable_radius'))} (all n votes agree). The L-inf threat model "
            f"eps={fmt_eps(tm.get('eps'))} in d={tm.get('d', '?')} dimensions corresponds to L2 radius "
            f"eps*sqrt(d)={num(tm.get('l2_equivalent'))} (contains the whole L-inf ball) and "
            f"eps*sqrt(d)/2={num(tm.get('l2_ball'))} (the L2 budget of fortify's CW and APGD-L2 numbers).",
        )
    )


def _per_class_table(doc: Document, payload: dict[str, Any], source: str) -> None:
    per_class = payload.get("per_class") or {}
    radii = [c["radius"] for c in payload.get("certified") or []]
    if per_class:
        doc.add(
            Table(
                ["Class", "n", "Abstain % [95% CI]", *[f"certified @ {num(r, 4)}" for r in radii]],
                [
                    [
                        name,
                        str(pc.get("n", DASH)),
                        pct_ci(pc.get("abstain"), "rate"),
                        *[pct_ci(c) for c in pc.get("certified") or []],
                    ]
                    for name, pc in per_class.items()
                ],
                caption="Per-class certified accuracy % [95% CI] by L2 radius",
                source=f"{source} 'per_class'",
            )
        )


def _sanity(doc: Document, payload: dict[str, Any]) -> None:
    """Empirical accuracy must not fall below certified accuracy: each check's verdict, loud when it fails."""
    for check in payload.get("sanity") or []:
        verdict = "PASS" if check.get("passed") else "FAIL"
        doc.add(Para(f"Sanity check {verdict}: {check.get('check')}. {check.get('detail', '')}"))
        if not check.get("passed"):
            doc.add(
                Para(
                    "the smoothed classifier lost a point under attack that was certified at that radius "
                    "(see the check's detail): a bug or a broken certificate; the certified accuracies above "
                    "must not be trusted",
                    "alarm",
                )
            )


def _cost(doc: Document, payload: dict[str, Any]) -> None:
    cost = payload.get("cost") or {}
    sec = cost.get("seconds_per_image") or {}
    passes = cost.get("passes_per_image") or {}
    finetune = payload.get("finetune") or {}
    doc.add(
        Para(
            f"Cost per image: certify {num(sec.get('certify'), 3)} s ({num(passes.get('certify_forward'))} "
            f"forward passes), attack {num(sec.get('attack'), 3)} s ({num(passes.get('attack_gradient'))} "
            f"gradient evaluations, {num(passes.get('attack_forward'))} forward passes). Noise fine-tuning: "
            + (
                f"{finetune.get('epochs')} epoch(s), {num(finetune.get('seconds'), 3)} s."
                if finetune
                else "none (the checkpoint was certified as is)."
            )
        )
    )
