"""Figures of the detection stage, drawn from the numbers stored in detect.json: per model, the detector's
score histograms and ROC curves beside detect.json (`detect_figures`), and the report's ROC figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from fortify.report.figures.png import save_png
from fortify.report.fmt import num

LABELS = {"fgsm": "FGSM", "pgd": "PGD", "cw": "CW-L2", "adaptive": "ADAPTIVE (knows the detector)"}


def score_histograms(entry: dict, title: str, path: Path) -> Path:
    """One panel per attack: clean test scores vs the fooling adversarial examples' scores."""
    attacks = entry["attacks"]
    tau = entry["detector"]["threshold"]["value"]
    clean = np.asarray(entry["clean"]["scores"], dtype=float)
    fig = Figure(figsize=(3.4 * len(attacks), 3.0))
    axes = fig.subplots(1, len(attacks), squeeze=False)[0]
    for ax, (key, a) in zip(axes, attacks.items(), strict=True):
        adv = np.asarray(a["scores"], dtype=float)
        both = np.r_[clean, adv, tau]
        bins = np.linspace(both.min(), both.max(), 30) if np.ptp(both) > 0 else 10
        ax.hist(clean, bins=bins, alpha=0.6, label=f"clean (n={len(clean)})", color="tab:blue")
        ax.hist(adv, bins=bins, alpha=0.6, label=f"fooling adv. (n={len(adv)})", color="tab:red")
        fpr = entry["detector"]["threshold"]["target_fpr"]
        ax.axvline(tau, color="black", ls="--", lw=1, label=f"threshold ({fpr:.0%} FPR on val)")
        ax.set_title(LABELS.get(key, key), fontsize=9)
        ax.set_xlabel("detector logit", fontsize=8)
        ax.legend(fontsize=6)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_png(fig, path)


def roc_curves(entry: dict, title: str, path: Path) -> Path:
    fig = Figure(figsize=(4.6, 4.2))
    ax = fig.subplots()
    for key, a in entry["attacks"].items():
        if not a.get("roc"):
            continue
        auc = a["auroc"]
        ax.plot(
            a["roc"]["fpr"],
            a["roc"]["tpr"],
            lw=2.2 if a["adaptive"] else 1.2,
            label=f"{LABELS.get(key, key)} AUROC {auc:.3f}",
        )
    ax.plot([0, 1], [0, 1], color="gray", lw=0.8, ls=":")
    ax.axvline(entry["detector"]["threshold"]["target_fpr"], color="black", lw=0.8, ls="--")
    ax.set_xlabel("false-positive rate (clean test)")
    ax.set_ylabel("true-positive rate (fooling adversarial)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    return save_png(fig, path)


def detect_figures(payload: dict, fig_dir: Path) -> dict[str, list[str]]:
    """Both figures for every model; returns {model: [paths relative to fig_dir's parent]}."""
    out: dict[str, list[str]] = {}
    for name, entry in payload["models"].items():
        title = f"{name} model ({entry['checkpoint'].get('model')}): Mahalanobis detector"
        h = score_histograms(entry, title, fig_dir / f"detect_{name}_scores.png")
        r = roc_curves(entry, title, fig_dir / f"detect_{name}_roc.png")
        out[name] = [p.relative_to(fig_dir.parent).as_posix() for p in (h, r)]
    return out


def report_roc_curves(entry: dict, title: str, path: Path, labels: dict[str, str]) -> Path:
    """The report's ROC figure of one model (its own attack names in `labels`), from the stored ROC points."""
    fig = Figure(figsize=(4.6, 4.2))
    ax = fig.subplots()
    for key, a in (entry.get("attacks") or {}).items():
        roc = a.get("roc")
        if roc:
            ax.plot(
                roc["fpr"],
                roc["tpr"],
                lw=2.2 if a.get("adaptive") else 1.1,
                label=f"{labels.get(key, key)}: AUROC {num(a.get('auroc'), 3)}",
            )
    ax.plot([0, 1], [0, 1], color="gray", lw=0.8, ls=":")
    fpr = ((entry.get("detector") or {}).get("threshold") or {}).get("target_fpr")
    if fpr is not None:
        ax.axvline(fpr, color="black", lw=0.8, ls="--")
    ax.set_xlabel("false-positive rate (clean test images)")
    ax.set_ylabel("true-positive rate (fooling adversarial)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    return save_png(fig, path)
