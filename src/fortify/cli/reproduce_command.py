"""`fortify reproduce`: argument parsing and printing; the logic is in fortify.pipeline."""

from __future__ import annotations

import os
import time
from pathlib import Path

import typer
from rich.console import Console

from fortify.cli import options
from fortify.cli.table1 import print_table1

NAME = "reproduce"
# The built-in profiles, written out so that `--help` does not load the configs; a test keeps it in step
# with configs/profiles.
PROFILES_HELP = "smoke | quick | best | best-eps4 | paper"


def reproduce(
    data: str = options.data(),
    out: Path = options.out("Run directory to create (or continue with --resume)."),
    profile: str = typer.Option(
        "quick",
        "--profile",
        help=f"{PROFILES_HELP} (configs/profiles; `fortify profile list`) or your own YAML file "
        "(`fortify profile show`).",
    ),
    defense: str | None = typer.Option(
        None,
        "--defense",
        help="mixed (the study's recipe) | pgd | fast | trades | mart. Default: the profile's "
        "(quick: mixed; best: pgd with AWP).",
    ),
    resume: bool = options.resume("Continue this run; finished stages are skipped."),
    force: bool = options.force("Wipe --out and start over."),
    device: str = options.device(),
    precision: str = options.precision(),
    folds: int | None = typer.Option(
        None,
        "--folds",
        help="Scan-grouped K-fold cross-validation: the whole study once per fold, then a summary.",
    ),
    fold: int | None = typer.Option(
        None,
        "--fold",
        help="With --folds K: run fold i alone (one machine per fold on a shared --out, each with "
        "--resume); the summary covers the folds finished so far.",
    ),
    weights: Path | None = typer.Option(
        None,
        "--weights",
        help="Offline pretrained weights (torchvision state dict), e.g. for --profile paper.",
    ),
    assign: list[str] = typer.Option(
        [],
        "--set",
        help="Override any profile field, dotted and repeatable: --set train.epochs=5 "
        "--set evaluate.square_queries=5000. Recorded in RUN_DIR/config.yaml.",
    ),
    eps: str | None = typer.Option(None, "--eps", help="Shortcut for --set eps=... (e.g. 4/255)."),
    model: str | None = typer.Option(None, "--model", help="Shortcut for --set model=... (e.g. resnet34)."),
    extras: str | None = typer.Option(
        None,
        "--extras",
        help="Stages beyond the study, comma-separated: explain, detect, certify (budgets: the "
        "profile's sections of the same names).",
    ),
    window: str | None = options.window_option(None),
    grouping: str | None = options.grouping_option(None),
) -> None:
    """Run the whole study: audit, split, normal + adversarial training, evaluation, transfer, report."""
    from fortify.cli.printing import note_nothing_to_resume, nothing_in
    from fortify.pipeline import reproduce as run_study

    console = Console()
    overrides = _overrides(assign, eps, model, window, grouping, extras, weights)
    if resume and nothing_in(out) and int(os.environ.get("RANK", "0")) == 0:
        note_nothing_to_resume(out)
    started = time.perf_counter()
    run_dir = run_study(
        data,
        out,
        profile=profile,
        defense=defense,
        resume=resume,
        force=force,
        progress=True,
        overrides=overrides or None,
        device=device,
        precision=precision,
        folds=folds,
        fold=fold,
    )
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports
        return
    console.print(f"finished in {time.perf_counter() - started:.0f} s")
    _print_outputs(run_dir, folds is not None, console)


def _print_outputs(run_dir: Path, cross_validation: bool, console: Console) -> None:
    """Where the report is; Table 1 first for a single run (cross-validation has its own summary)."""
    if cross_validation:
        console.print(f"cross-validation: {run_dir / 'cv' / 'summary.json'}")
        console.print(f"report: {run_dir / 'cv' / 'report.md'}")
        console.print(f"html:   {run_dir / 'cv' / 'report.html'}")
        return
    print_table1(run_dir, console)
    console.print(f"report: {run_dir / 'report' / 'report.md'}")
    console.print(f"html:   {run_dir / 'report' / 'report.html'}")


def _overrides(
    assign: list[str],
    eps: str | None,
    model: str | None,
    window: str | None,
    grouping: str | None,
    extras: str | None,
    weights: Path | None,
) -> dict:
    """The profile overrides of `reproduce`: every --set, then the shortcut options given."""
    from fortify.pipeline.profiles import parse_assignments

    overrides = parse_assignments(list(assign))
    shortcuts = {"eps": eps, "model": model, "window": window, "grouping": grouping}
    overrides.update({key: value for key, value in shortcuts.items() if value is not None})
    if extras is not None:
        overrides["extras"] = [e.strip() for e in extras.split(",") if e.strip()]
    if weights is not None:
        if not weights.is_file():
            from fortify.errors import ConfigError

            raise ConfigError(f"--weights file not found: {weights}")
        overrides["weights"] = str(weights.expanduser().resolve())
    return overrides


def register(app: typer.Typer) -> None:
    """Add `fortify reproduce` to the app."""
    app.command(NAME)(reproduce)
