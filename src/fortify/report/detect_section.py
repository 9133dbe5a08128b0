"""The report's detection section: the Mahalanobis detector judged against an adaptive attacker.

Reads detect.json's payload only (the numbers, verdicts and ROC points were all computed by
fortify.detect); the headline is the adaptive attack, the non-adaptive attacks are shown beside it,
labelled, and a defeated detector is said to be defeated in plain words."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fortify.report.doc import Document, Figure, Heading, Para, Table
from fortify.report.figures.detect import report_roc_curves
from fortify.report.fmt import DASH, fmt_eps, num

LABELS = {"fgsm": "FGSM", "pgd": "PGD", "cw": "CW-L2", "adaptive": "Adaptive PGD (knows the detector)"}
MODEL_LABELS = {"normal": "Normal training", "adversarial": "Adversarial training"}


def _pct(x: Any) -> str:
    return f"{100 * x:.1f}%" if isinstance(x, (int, float)) and not isinstance(x, bool) else DASH


def _rate(r: dict | None) -> str:
    """'62.5% (10/16) [38.6, 81.5]' from detect.json's rate blocks."""
    if not r or r.get("value") is None:
        return DASH
    ci = r.get("ci")
    tail = f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else ""
    return f"{_pct(r['value'])} ({r['k']}/{r['n']}){tail}"


def _auroc(a: dict) -> str:
    if a.get("auroc") is None:
        return DASH
    ci = a.get("auroc_ci")
    return f"{a['auroc']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _budget(a: dict) -> str:
    tm = a.get("threat_model")
    if not tm:
        return "unbounded"
    norm = tm.get("norm", "linf")
    return f"{'L-inf' if norm == 'linf' else 'L2'} {fmt_eps(tm.get('eps'), norm)}"


def section_detect(doc: Document, payload: dict, source: str, fig_dir: Path | None = None) -> None:
    """Add the detection section; with `fig_dir`, also draw each model's ROC curves there from the
    ROC points stored in the payload."""
    doc.add(Heading("Detecting adversarial inputs, against an adaptive attacker"))
    method = payload.get("method") or {}
    doc.add(
        Para(
            "Detector: "
            + method.get("detector", "?")
            + ". Threshold: "
            + method.get("threshold", "?")
            + ". Counting: "
            + method.get("counting", "?")
            + ". Adaptive attack: "
            + method.get("adaptive", "?")
            + ". Intervals: "
            + method.get("intervals", "?")
            + "."
        )
    )
    for name, entry in (payload.get("models") or {}).items():
        _model_block(doc, name, entry, source, fig_dir)
    if payload.get("adversarial_skipped"):
        doc.add(Para(f"Adversarially trained model not evaluated: {payload['adversarial_skipped']}.", "note"))
    doc.add(Para(f"{source} (settings: {payload.get('settings', {})})", "source"))


def _model_block(doc: Document, name: str, entry: dict, source: str, fig_dir: Path | None) -> None:
    """One model: the verdict, the headline, the per-attack table, the detector's fit and its ROC figure."""
    ck, det, data = entry.get("checkpoint") or {}, entry.get("detector") or {}, entry.get("data") or {}
    label = MODEL_LABELS.get(name, name)
    doc.add(Heading(f"{label} slot: {ck.get('model', '?')} trained with mode={ck.get('mode', '?')}", 3))
    if data.get("synthetic"):
        doc.add(Para("These numbers come from SYNTHETIC phantom data.", "warn"))
    head = entry.get("headline") or {}
    attacks = entry.get("attacks") or {}
    adaptive = attacks.get("adaptive") or {}
    pgd = head.get("non_adaptive_pgd") or {}
    doc.add(Para(head.get("verdict", "no verdict recorded"), "alarm" if head.get("defeated") else "note"))
    doc.add(
        Para(
            f"Headline (adaptive attack): AUROC {_auroc(adaptive)}, TPR at the 5%-FPR threshold "
            f"{_rate(adaptive.get('tpr_at_threshold'))}, attack success (fooled and undetected) "
            f"{_rate(adaptive.get('attack_success'))}. Non-adaptive PGD, for comparison only: AUROC "
            f"{num(pgd.get('auroc'), 3)}, TPR {_pct(pgd.get('tpr'))}."
        )
    )
    rows = []
    for key in sorted(attacks, key=lambda k: not attacks[k].get("adaptive")):  # stable: FGSM, PGD, CW
        a = attacks[key]
        rows.append(
            [
                LABELS.get(key, key) + (" [HEADLINE]" if a.get("adaptive") else " [non-adaptive]"),
                _budget(a),
                str(a.get("spec", DASH)),
                f"{a.get('n_fooled', DASH)}/{a.get('n_attacked', DASH)}",
                _auroc(a),
                _rate(a.get("tpr_at_threshold")),
                _rate(a.get("attack_success")),
                f"{a['seconds']:.0f}" if isinstance(a.get("seconds"), (int, float)) else DASH,
            ]
        )
    doc.add(
        Table(
            [
                "Attack",
                "Budget",
                "Spec",
                "Fooled / attacked",
                "AUROC [95% bootstrap]",
                "TPR at threshold [Wilson]",
                "Attack success: fooled and undetected [Wilson]",
                "s",
            ],
            rows,
            caption=f"{label}: detection on {data.get('n_test', '?')} test images "
            f"(clean accuracy {_pct((entry.get('clean') or {}).get('accuracy'))})",
            source=f"{source} models.{name}.attacks",
        )
    )
    thr, fit = det.get("threshold") or {}, det.get("head") or {}
    layers = ", ".join(
        f"{x['name']} ({x['dim']}-d, shrinkage {x['shrinkage']:.3f})" for x in det.get("layers") or []
    )
    doc.add(
        Para(
            f"Threshold {num(thr.get('value'))} on the detector logit, set on {thr.get('n', '?')} clean "
            f"{thr.get('split', '?')} images (target FPR {_pct(thr.get('target_fpr'))}, realised there "
            f"{_pct(thr.get('val_fpr'))}); FPR on clean test images at that threshold "
            f"{_rate((entry.get('clean') or {}).get('test_fpr'))}. Layers: {layers}. Gaussians from "
            f"{(det.get('gaussians') or {}).get('n', '?')} clean training images; logistic head from "
            f"{fit.get('n_clean', '?')} clean and {fit.get('n_adversarial', '?')} adversarial training "
            f"examples ({fit.get('positives', '?')}; {fit.get('cross_fit_folds', '?')}-fold out-of-fold "
            f"distances). Adaptive attack parameters: {adaptive.get('params', {})}.",
            "source",
        )
    )
    if fig_dir is not None and any(a.get("roc") for a in attacks.values()):
        _roc_block(doc, name, entry, source, Path(fig_dir))


def _roc_block(doc: Document, name: str, entry: dict, source: str, fig_dir: Path) -> None:
    """The model's ROC figure, drawn into the report's figures folder from the payload's ROC points."""
    label = MODEL_LABELS.get(name, name)
    path = report_roc_curves(
        entry, f"{label}: Mahalanobis detector", fig_dir / f"detect_roc_{name}.png", LABELS
    )
    doc.add(
        Figure(
            path,
            f"{label}: ROC curves of the detector, clean test vs fooling adversarial "
            "examples (thick: adaptive attack; dashed: target FPR)",
            f"{source} roc",
        )
    )
