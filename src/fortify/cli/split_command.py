"""`fortify split`: argument parsing and printing only; the logic is in fortify.data."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from fortify.cli import options
from fortify.cli.printing import with_warning_lines
from fortify.data.groups import NEAR_DUP_THRESHOLD

NAME = "split"


def split(
    data: str = typer.Argument(..., help="Dataset folder (one subfolder per class) or 'phantom[:n=N]'."),
    out: Path = options.out("Where to write the split manifest (JSON)."),
    seed: int = options.seed(help="Seed for the group shuffle."),
    val: float = typer.Option(0.15, "--val", help="Validation fraction."),
    test: float = typer.Option(0.15, "--test", help="Test fraction."),
    image_size: int = typer.Option(128, "--image-size", help="Preprocessing size recorded in the manifest."),
    near_dup: float = typer.Option(
        NEAR_DUP_THRESHOLD,
        "--near-dup-threshold",
        help="Max mean |grey-level difference| of 16x16 thumbnails.",
    ),
    grouping: str = options.grouping_option(),
    window: str = options.window_option(),
) -> None:
    """Stratified, seeded train/val/test split that keeps every scan (and near-duplicate) on one side."""
    from fortify.data import make_split, save_manifest

    options.check_out_file(out, "split.json")  # before the split, which can take minutes
    manifest, _ = with_warning_lines(
        lambda: make_split(
            data,
            seed=seed,
            fractions=(1.0 - val - test, val, test),
            image_size=image_size,
            progress=True,
            near_dup_threshold=near_dup,
            grouping=grouping,
            window=window,
        )
    )
    _refuse_missing_classes(manifest)
    save_manifest(manifest, out)
    _print_split(manifest, seed, out, Console())


def _refuse_missing_classes(manifest) -> None:
    """A class with no image in train or in test cannot be learnt or measured: one line, no manifest."""
    from fortify.errors import DataError

    counts = manifest.counts()
    for c in manifest.dataset["classes"]:
        total = sum(per_class[c] for per_class in counts.values())
        lacking = [name for name in ("train", "test") if counts.get(name, {}).get(c, 0) == 0]
        if lacking:
            raise DataError(
                f"class {c!r} has {total} usable image(s), none in {' or '.join(lacking)}; each class needs "
                "images in train and in test (add images or drop the class folder)"
            )


def _print_split(manifest, seed: int, out: Path, console: Console) -> None:
    """Images per split and class, what was dropped or kept together, and the leakage sentinel's score."""
    counts = manifest.counts()
    classes = manifest.dataset["classes"]
    synthetic = "  [bold red](SYNTHETIC phantom)[/]" if manifest.dataset.get("synthetic") else ""
    t = Table(title=f"Split of {manifest.dataset['root']} (seed {seed}){synthetic}", title_justify="left")
    t.add_column("split")
    for c in classes:
        t.add_column(c, justify="right")
    t.add_column("total", justify="right")
    for name, per_class in counts.items():
        t.add_row(name, *(str(per_class[c]) for c in classes), str(sum(per_class.values())))
    console.print(t)
    console.print(
        f"dropped {len(manifest.dropped_duplicates)} exact duplicate(s); "
        f"{manifest.grouping.get('groups', manifest.near_duplicate_groups)} group(s) "
        f"({manifest.grouping.get('applied', 'near-duplicate')} grouping) kept whole within one split"
    )
    s = manifest.sentinel
    if s.get("accuracy") is not None:
        console.print(
            f"leakage sentinel: 1-nearest-neighbour on raw pixels scores {100 * s['accuracy']:.1f}% on test "
            f"(95% Wilson {100 * s['accuracy_ci'][0]:.1f}-{100 * s['accuracy_ci'][1]:.1f}); "
            f"{100 * s['neighbour_share']:.0f}% of test images have a file-number neighbour as nearest "
            "train image; a model must clearly beat this"
        )
    console.print(f"wrote {out}")


def register(app: typer.Typer) -> None:
    """Add `fortify split` to the app."""
    app.command(NAME)(split)
