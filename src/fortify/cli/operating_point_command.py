"""`fortify operating-point`: argument parsing and the before/after table; the logic is in
fortify.evaluation.operating_point."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from fortify.cli import options
from fortify.cli.printing import data_warnings_reported
from fortify.errors import ConfigError

NAME = "operating-point"


def _floors(items: list[str] | None) -> dict[str, str]:
    floors = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ConfigError(
                f"--min-recall {item!r}: expected CLASS=FLOOR, e.g. malignant=0.95 or malignant=keep"
            )
        floors[name.strip()] = value.strip()
    return floors


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def print_summary(record: dict, out: Path, console: Console) -> None:
    point = record["operating_point"]
    before, after = point["before"], point["after"]
    table = Table(
        title=f"operating point chosen on {point['chosen_on']['n']} validation images "
        f"(balanced accuracy; moved: {', '.join(point['moved']) or 'none'})",
        title_justify="left",
    )
    for col in ("", "offset", "recall before", "recall after"):
        table.add_column(col, justify="left" if not col else "right")
    for name, offset in zip(point["classes"], record["class_bias"], strict=True):
        table.add_row(
            name,
            f"{offset:+.2f}",
            _pct(before["per_class"][name]["sensitivity"]),
            _pct(after["per_class"][name]["sensitivity"]),
        )
    table.add_row("accuracy", "", _pct(before["accuracy"]), _pct(after["accuracy"]))
    table.add_row("balanced", "", _pct(before["balanced_accuracy"]), _pct(after["balanced_accuracy"]))
    console.print(table)
    floors = ", ".join(f"{k} >= {100 * v:.1f}%" for k, v in point["min_recall"].items())
    if floors:
        console.print(f"validation recall floors kept: {floors}")
    console.print(
        f"wrote {out} (same weights, offsets in its JSON). These are validation figures, chosen on the "
        "same images: measure on the test split with `fortify evaluate --checkpoint` "
        f"{out}, which attacks the model with its offsets."
    )


def operating_point(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="A fortify checkpoint .safetensors."),
    data: str = options.data(),
    split: Path | None = options.split(),
    out: Path = options.out("The new checkpoint (.safetensors; its .json is written beside it)."),
    move: list[str] | None = typer.Option(
        None,
        "--move",
        help="A class whose logit offset may change, repeatable (default: every class but the most "
        "frequent one, which stays at 0).",
    ),
    min_recall: list[str] | None = typer.Option(
        None,
        "--min-recall",
        help="CLASS=FLOOR, repeatable: keep this class's validation recall at or above FLOOR (0-1), or "
        "CLASS=keep for the recall it has without offsets (e.g. malignant=keep).",
    ),
    max_offset: float = typer.Option(4.0, "--max-offset", help="Largest |offset| searched.", min=0.01),
    step: float = typer.Option(0.1, "--step", help="Grid step of the offsets.", min=0.001),
    force: bool = options.force("Overwrite --out if it exists."),
) -> None:
    """Choose one logit offset per class on the split's validation images (maximising balanced
    accuracy, e.g. to give a rare class back its predictions) and write a checkpoint that carries them.
    The test images are not read; evaluate the new checkpoint to measure it."""
    from fortify.evaluation.operating_point import choose_for_checkpoint

    options.check_out_file(out, "operating-point.safetensors")
    if (out.exists() or out.with_suffix(".json").exists()) and not force:
        raise ConfigError(f"--out {out} exists; choose another path or pass --force")
    with data_warnings_reported():  # e.g. a --split other than the one the model trained on
        record = choose_for_checkpoint(
            checkpoint,
            data,
            out,
            split=split,
            move=move,
            min_recall=_floors(min_recall),
            max_offset=max_offset,
            step=step,
        )
    print_summary(record, out, Console())


def register(app: typer.Typer) -> None:
    """Add `fortify operating-point` to the app."""
    app.command(NAME)(operating_point)
