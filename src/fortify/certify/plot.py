"""The certified-accuracy curve (matplotlib object API + Agg canvas, atomic write, like report/figures.py).

Drawn from certify.json's numbers only; fortify.report draws the same figure for the report from the
same payload (report never imports this package: it reads files)."""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fortify.fileio import atomic_write


def certified_curve_figure(payload: dict, path: Path) -> Path:
    """Certified accuracy vs L2 radius, the empirical (smoothed PGD) accuracies as points, and the L-inf
    threat model's L2 radii as vertical lines."""
    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.subplots()
    curve = payload["curve"]["points"]
    ax.step(
        [p[0] for p in curve],
        [100 * p[1] for p in curve],
        where="post",
        label=f"certified (sigma={payload['sigma']:g}, n={payload['n']}, alpha={payload['alpha']:g})",
    )
    emp = [e for e in payload["empirical"]["at"] if e["accuracy"] is not None]
    if emp:
        ax.plot(
            [e["radius"] for e in emp],
            [100 * e["accuracy"] for e in emp],
            "o--",
            label="empirical: smoothed PGD-L2 (upper bound)",
        )
    tm = payload["threat_model"]
    for key, style in (("l2_ball", ":"), ("l2_equivalent", "-.")):
        ax.axvline(tm[key], color="gray", linestyle=style, label=f"{tm['labels'][key]} = {tm[key]:.3f}")
    ax.set_xlabel("L2 radius ([0,1] pixel units)")
    ax.set_ylabel("accuracy on test split (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("Randomized smoothing: certified accuracy vs L2 radius")
    fig.tight_layout()
    FigureCanvasAgg(fig)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    return path
