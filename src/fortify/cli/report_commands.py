"""`fortify report` and `fortify reproduce`: argument parsing and printing; the logic is in
fortify.report and fortify.pipeline."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from fortify.cli import options

# The built-in profiles, written out so that `--help` does not load the configs; a test keeps it in step
# with configs/profiles.
PROFILES_HELP = "smoke | quick | best | best-eps4 | paper"


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


def register(app: typer.Typer) -> None:
    """Add `report`, `profile` and `reproduce` to the `fortify` app."""
    _register_report(app)
    _register_profile(app)
    _register_reproduce(app)


def _register_report(app: typer.Typer) -> None:
    @app.command("report")
    def report_command(
        run_dir: Path = typer.Argument(..., help="A run directory written by `fortify reproduce`."),
    ) -> None:
        """(Re)build RUN_DIR/report/report.md and report.html (self-contained) from the run's files."""
        from fortify.report import build_report

        console = Console()
        out = build_report(run_dir)
        print_table1(run_dir, console)
        console.print(f"report: {out['markdown']}")
        console.print(f"html:   {out['html']}")


def _register_profile(app: typer.Typer) -> None:
    profile_app = typer.Typer(help="Built-in profiles: list them, print one as a starting point.")
    app.add_typer(profile_app, name="profile")

    @profile_app.command("list")
    def profile_list() -> None:
        """Name and description of every built-in profile."""
        from fortify.pipeline.profiles import list_profiles, load_profile

        names = list_profiles()
        width = max(map(len, names))
        for name in names:
            print(f"{name:{width}s}  {load_profile(name).description}")

    @profile_app.command("show")
    def profile_show(
        name: str = typer.Argument(..., help="A built-in profile (`fortify profile list`) or a YAML file."),
    ) -> None:
        """Print a profile's YAML (with its comments): copy it, edit it, run it with --profile FILE."""
        from fortify.pipeline.profiles import load_profile, profile_path

        path = profile_path(name)
        load_profile(name)  # a user's file is validated before it is shown as a starting point
        print(path.read_text(), end="")


def _register_reproduce(app: typer.Typer) -> None:
    @app.command("reproduce")
    def reproduce_command(
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
        model: str | None = typer.Option(
            None, "--model", help="Shortcut for --set model=... (e.g. resnet34)."
        ),
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
        from fortify.pipeline import reproduce

        console = Console()
        overrides = _overrides(assign, eps, model, window, grouping, extras, weights)
        started = time.perf_counter()
        run_dir = reproduce(
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
        )
        console.print(f"finished in {time.perf_counter() - started:.0f} s")
        if folds is not None:
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
