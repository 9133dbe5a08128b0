"""`fortify report`: rebuild a run's report and print its Table 1; the logic is in fortify.report."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from fortify.cli.table1 import print_table1

NAME = "report"


def report(
    run_dir: Path = typer.Argument(..., help="A run directory written by `fortify reproduce`."),
) -> None:
    """(Re)build RUN_DIR/report/report.md and report.html (self-contained) from the run's files."""
    from fortify.report import build_report

    console = Console()
    out = build_report(run_dir)
    print_table1(run_dir, console)
    console.print(f"report: {out['markdown']}")
    console.print(f"html:   {out['html']}")


def register(app: typer.Typer) -> None:
    """Add `fortify report` to the app."""
    app.command(NAME)(report)
