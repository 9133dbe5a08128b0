"""`fortify attack`: adversarial test images as PNGs plus per-image results (logic in fortify.evaluation)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from fortify.cli import model_options, options
from fortify.evaluation.settings import DEFAULTS

NAME = "attack"


def attack(
    checkpoint: Path | None = model_options.CHECKPOINT,
    data: str = options.data(),
    split: Path | None = options.split(),
    attack_spec: str = typer.Option(..., "--attack", help="Attack spec, e.g. pgd:eps=2/255,steps=20."),
    out: Path = options.out("Output folder: images/*.png and attacks.json."),
    limit: int | None = options.limit("Attack only N test images (stratified)."),
    batch_size: int = options.batch_size(DEFAULTS.batch_size),
    seed: int = options.seed(),
    device: str = options.device(),
    precision: str = options.precision(),
    force: bool = options.force(),
    arch: str | None = model_options.ARCH,
    weights: Path | None = model_options.WEIGHTS,
    num_classes: int | None = model_options.NUM_CLASSES,
    channels: int | None = model_options.CHANNELS,
    image_size: int | None = model_options.IMAGE_SIZE,
    mean: str | None = model_options.MEAN,
    std: str | None = model_options.STD,
) -> None:
    """Attack the test split of a checkpoint; write 8-bit PNGs at the model's input size and attacks.json."""
    from fortify.attacks import parse_spec
    from fortify.cli.printing import data_warnings_reported
    from fortify.evaluation import attack_checkpoint, check_out_dir
    from fortify.runtime import Runtime

    model = model_options.open_model_options(
        checkpoint, arch, weights, num_classes, channels, image_size, mean, std
    )
    spec = parse_spec(attack_spec)
    check_out_dir(out, force)
    runtime = Runtime.resolve(device, precision)
    with data_warnings_reported():
        summary = attack_checkpoint(
            model,
            data=data,
            attack=spec,
            out_dir=out,
            split=split,
            limit=limit,
            runtime=runtime,
            batch_size=batch_size,
            progress=True,
            seed=seed,
        )
    _print_summary(summary, out)


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def _print_summary(summary: dict, out: Path) -> None:
    """Accuracy clean, attacked and after 8-bit PNG rounding, the success rate, and where the files are."""
    table = Table(title=f"{summary['attack']} on {summary['data']['n']} test images", title_justify="left")
    for col in ("clean acc", "adversarial acc", "after 8-bit PNG", "success rate", "seconds"):
        table.add_column(col, justify="right")
    table.add_row(
        _pct(summary["clean_accuracy"]),
        _pct(summary["adv_accuracy"]),
        _pct(summary["png_accuracy"]),
        _pct(summary["success_rate"]),
        f"{summary['seconds']:.1f}",
    )
    console = Console()
    console.print(table)
    console.print(f"images: {out / 'images'}  results: {out / 'attacks.json'}")


def register(app: typer.Typer) -> None:
    """Add `fortify attack` to the app."""
    app.command(NAME)(attack)
