"""Writing a drawn figure: an Agg canvas (no pyplot state, no display), one PNG written atomically."""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fortify.fileio import atomic_write


def save_png(fig: Figure, path: Path, *, tight: bool = True, dpi: int = 110) -> Path:
    """Write `fig` to `path`. bbox_inches="tight" draws the figure twice; a figure that lays itself out
    (the big example grid, the explain grid) passes tight=False."""
    FigureCanvasAgg(fig)
    bbox = "tight" if tight else None
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, bbox_inches=bbox))
    return path
