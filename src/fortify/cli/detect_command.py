"""`fortify detect`: argument parsing and the summary table; the logic is in fortify.detect."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from fortify.cli import options
from fortify.cli.out_folder import claim_out
from fortify.cli.printing import data_warnings_reported, wide_console
from fortify.errors import ConfigError
from fortify.number_text import parse_number

NAME = "detect"
PRESETS = ("default", "quick", "smoke")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _positive(value: int | None, option: str) -> int | None:
    # Checked here rather than with typer's min= so that a bad value is a one-line fortify error.
    if value is not None and value < 1:
        raise ConfigError(f"{option} must be >= 1, got {value}")
    return value


def print_summary(payload: dict, console: Console, out: Path) -> None:
    for name, entry in payload["models"].items():
        ck, thr = entry["checkpoint"], entry["detector"]["threshold"]
        synthetic = "  [bold red](SYNTHETIC phantom data)[/]" if entry["data"]["synthetic"] else ""
        table = Table(
            title=f"{name}: {ck['model']} ({ck['mode']}), {entry['data']['n_test']} test images, threshold "
            f"{thr['value']:.3g} at {_pct(thr['target_fpr'])} FPR on {thr['n']} val images{synthetic}",
            title_justify="left",
        )
        for col in ("attack", "fooled", "AUROC", "TPR@thr", "fooled+undetected", "s"):
            table.add_column(col, justify="left" if col == "attack" else "right")
        for key, a in entry["attacks"].items():
            auroc = "n/a" if a["auroc"] is None else f"{a['auroc']:.3f}"
            table.add_row(
                f"[bold]{key} (adaptive)[/]" if a["adaptive"] else f"{key} (non-adaptive)",
                f"{a['n_fooled']}/{a['n_attacked']}",
                auroc,
                _pct(a["tpr_at_threshold"]["value"]),
                _pct(a["attack_success"]["value"]),
                f"{a['seconds']:.0f}",
            )
        console.print(table)
        head = entry["headline"]
        style = "bold red" if head["defeated"] else "bold"
        console.print(f"[{style}]{head['verdict']}[/]")
    console.print(
        f"results: {out / 'detect.json'}  figures: {out / 'figures'}  ({payload['seconds_total']:.0f} s)"
    )


def detect(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Checkpoint .safetensors (the normal model)."),
    adversarial: Path | None = typer.Option(
        None, "--adversarial", help="Also study this (adversarially trained) checkpoint."
    ),
    data: str = options.data(),
    split: Path | None = options.split(),
    out: Path = options.out("Output folder for detect.json and figures/."),
    preset: str = typer.Option("default", "--preset", help="Budgets: default | quick | smoke."),
    steps: int | None = typer.Option(None, "--steps", help="Adaptive attack steps per lambda."),
    limit: int | None = options.limit("Use only N test images (class-stratified).", min=None),
    eps: str | None = typer.Option(None, "--eps", help="L-inf budget (default 2/255)."),
    lambdas: str | None = typer.Option(None, "--lambdas", help="Adaptive lambdas, comma-separated."),
    seed: int = options.seed(),
    device: str = options.device(),
    precision: str = options.precision(),
    force: bool = options.force(),
    resume: bool = options.resume("Reuse the finished attack units in --out (an interrupted run)."),
    unit_size: int | None = typer.Option(None, "--unit-size", help="Images per work unit of each attack."),
) -> None:
    """Mahalanobis detector of adversarial inputs, scored against FGSM, PGD, CW and an adaptive attack.

    The attacks run in work units kept in --out/units (--resume reuses the finished ones); under
    `torchrun --nproc-per-node N -m fortify detect ...` the processes share the units out."""
    from fortify.detect import QUICK, SMOKE, DetectSettings, run_detect
    from fortify.distributed import shutdown
    from fortify.evaluation.loading import check_checkpoint_path
    from fortify.runtime import Runtime

    # Every check that can fail on user input runs before any work.
    if preset not in PRESETS:
        raise ConfigError(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    base = {"default": DetectSettings(), "quick": QUICK, "smoke": SMOKE}[preset]
    changes: dict = {"seed": seed, "models": "both" if adversarial is not None else "normal"}
    if _positive(steps, "--steps") is not None:
        changes["adaptive_steps"] = steps
    if _positive(unit_size, "--unit-size") is not None:
        changes["unit_size"] = unit_size
    if _positive(limit, "--limit") is not None:
        changes["test_limit"] = limit
    if eps is not None:
        changes["eps"] = parse_number(eps, "--eps", lo=0, hi=1)
    if lambdas is not None:
        try:
            changes["adaptive_lambdas"] = [float(v) for v in lambdas.split(",") if v.strip()]
        except ValueError as e:
            raise ConfigError(f"--lambdas {lambdas!r} is not a comma-separated list of numbers") from e
    settings = DetectSettings.from_dict({**base.to_dict(), **changes})
    check_checkpoint_path(checkpoint)
    if adversarial is not None:
        check_checkpoint_path(adversarial)
    runtime = Runtime.resolve(device, precision)
    dist = claim_out(out, force, resume, runtime.device.type)

    with data_warnings_reported():
        payload = run_detect(
            checkpoint,
            adversarial,
            data=data,
            split=split,
            out_dir=out,
            settings=settings,
            runtime=runtime,
            progress=True,
            resume=resume,
        )
    shutdown(dist)  # every process leaves the group together (rank 0 has written detect.json)
    if payload is not None:  # None: a torchrun process other than rank 0
        print_summary(payload, wide_console(110), out)


def register(app: typer.Typer) -> None:
    """Add `fortify detect` to the app."""
    app.command(NAME)(detect)
