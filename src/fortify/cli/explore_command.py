"""`fortify explore`: the per-image explorer of an evaluation; the logic is in fortify.report.explorer."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

NAME = "explore"


def explore(
    run_dir: Path = typer.Argument(
        ...,
        help="A `fortify evaluate` output folder, a `fortify reproduce` run directory, or a "
        "cross-validated run (--folds): one explorer over every fold's test images.",
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Where to write the explorer (default: RUN_DIR/explorer)."
    ),
) -> None:
    """Write RUN_DIR/explorer/index.html: every test image's clean and adversarial scan, perturbation and
    predictions, with filters and a detail view. Opens from disk in a browser, offline (no server)."""
    from fortify.report.explorer import build_explorer, explorer_size

    index = build_explorer(run_dir, out=out)
    size = explorer_size(index.parent) / 1e6
    Console(soft_wrap=True).print(f"explorer: {index} ({size:.1f} MB; open it in a browser)")


def register(app: typer.Typer) -> None:
    """Add `fortify explore` to the app."""
    app.command(NAME)(explore)
