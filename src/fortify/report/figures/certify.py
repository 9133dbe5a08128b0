"""The certify stage's figure: certified accuracy vs L2 radius, from the numbers in certify.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from fortify.report.figures.png import save_png


def certified_accuracy_figure(payload: dict[str, Any], path: Path) -> Path:
    """Certified accuracy vs L2 radius (step curve), empirical accuracy under smoothed PGD (points), and the
    L-inf threat model's two L2 radii (vertical lines), from the payload's numbers."""
    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.subplots()
    pts = (payload.get("curve") or {}).get("points") or []
    ax.step(
        [p[0] for p in pts],
        [100 * p[1] for p in pts],
        where="post",
        label=f"certified (sigma={payload.get('sigma')}, n={payload.get('n')}, alpha={payload.get('alpha')})",
    )
    emp = [e for e in (payload.get("empirical") or {}).get("at") or [] if e.get("accuracy") is not None]
    if emp:
        ax.plot([e["radius"] for e in emp], [100 * e["accuracy"] for e in emp], "o--", label="empirical")
    tm = payload.get("threat_model") or {}
    for key, style in (("l2_ball", ":"), ("l2_equivalent", "-.")):
        if isinstance(tm.get(key), (int, float)):
            label = (tm.get("labels") or {}).get(key, key)
            ax.axvline(tm[key], color="gray", linestyle=style, label=f"{label} = {tm[key]:.3f}")
    ax.set_xlabel("L2 radius ([0,1] pixel units)")
    ax.set_ylabel("accuracy on test split (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("Randomized smoothing: certified accuracy vs L2 radius")
    fig.tight_layout()
    return save_png(fig, path)
