"""Table 1 (fortify beside the study) as the closing summary of `fortify report` and `fortify reproduce`."""

from __future__ import annotations

from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table


def print_table1(run_dir: Path, console: Console) -> None:
    """Table 1 (fortify beside the study) as the closing summary. A number undermined by a failed sanity
    check is shown in red with '!' (the report names the check)."""
    from fortify.report import table1_summary

    t = table1_summary(run_dir, intervals=False)  # the report has the intervals; a terminal has no room
    table = Table(
        title="Table 1: test accuracy (%)", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False
    )
    headers = {"Combined": "Comb.", "Worst-case": "Worst"}
    short = {"Normal training": "normal", "Adversarial training": "adversarial", "fortify": "ours"}
    for i, h in enumerate(t.header):
        table.add_column(
            "" if i < 2 else headers.get(h, h), justify="left" if i < 2 else "right", no_wrap=True
        )
    failed = False
    for row in t.rows:
        cells = []
        for c in row:
            if "FAIL" in c:
                failed = True
                c = f"[bold red]{c.split(' ')[0]}![/]"
            cells.append(short.get(c, c.replace(" (stage not run)", "")))
        table.add_row(*cells)
    # rich assumes 80 columns when not writing to a terminal (logs, CI); the table needs ~90
    Console(width=max(console.width, 120)).print(table)
    if failed:
        console.print("[bold red]![/] a sanity check failed for this number; see the report's sanity table")
