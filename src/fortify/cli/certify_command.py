"""`fortify certify`: argument parsing and the summary; the logic is in fortify.certify."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from fortify.certify.settings import CertifySettings
from fortify.cli import options
from fortify.cli.out_folder import claim_out
from fortify.cli.printing import data_warnings_reported, wide_console
from fortify.errors import ConfigError
from fortify.number_text import parse_number

NAME = "certify"
_DEFAULTS = CertifySettings()  # the options' defaults


def _radii(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise ConfigError(f"--radii {text!r} is not a comma-separated list of numbers") from e


def _pct(block: dict | None) -> str:
    if not block or block.get("accuracy") is None:
        return "n/a"
    ci = block.get("accuracy_ci")
    return f"{100 * block['accuracy']:.1f}%" + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "")


def print_summary(payload: dict, console: Console, out: Path) -> None:
    data = payload["data"]
    synthetic = "  [bold red](SYNTHETIC phantom data)[/]" if data["synthetic"] else ""
    table = Table(
        title=f"{payload['model']['label']}: sigma={payload['sigma']:g}, n0={payload['n0']}, "
        f"n={payload['n']}, alpha={payload['alpha']:g}, {data['n']} test images{synthetic}",
        title_justify="left",
    )
    for col in ("L2 radius", "certified", "empirical (smoothed PGD)", "broken"):
        table.add_column(col, justify="right")
    empirical = {round(e["radius"], 9): e for e in payload["empirical"]["at"]}
    for c in payload["certified"]:
        e = empirical.get(round(c["radius"], 9), {})
        table.add_row(f"{c['radius']:.4g}", _pct(c), _pct(e), str(len(e.get("broken", []))))
    console.print(table)
    tm = payload["threat_model"]
    console.print(
        f"abstain rate {100 * payload['abstain']['rate']:.1f}%; L-inf eps {tm['eps'] * 255:.3g}/255 -> L2 "
        f"eps*sqrt(d) = {tm['l2_equivalent']:.4g}, eps*sqrt(d)/2 = {tm['l2_ball']:.4g}; largest certifiable "
        f"radius {payload['max_certifiable_radius']:.4g}"
    )
    for check in payload["sanity"]:
        verdict = "[green]PASS[/]" if check["passed"] else "[bold red]FAIL[/]"
        console.print(f"{verdict} {check['check']}: {check['detail']}")
    units = payload["units"]
    if units["reused"]:
        console.print(f"reused {units['reused']} of {units['count']} units from {out / 'units'}")
    cost = payload["cost"]
    console.print(
        f"per image: certify {cost['seconds_per_image']['certify']:.2f} s, attack "
        f"{cost['seconds_per_image']['attack']:.2f} s; total {cost['seconds']['total_this_run']:.0f} s; "
        f"results: {out / 'certify.json'}"
    )


def certify(
    checkpoint: Path = typer.Option(
        ..., "--checkpoint", help="Start checkpoint .safetensors (its .json beside)."
    ),
    data: str = options.data(),
    split: Path | None = options.split(),
    out: Path = options.out("Output folder for certify.json, figures/, noise-model/."),
    sigma: float = typer.Option(_DEFAULTS.sigma, "--sigma", help="Gaussian noise std in [0,1] pixel units."),
    n: int = typer.Option(_DEFAULTS.n, "--n", help="Votes that bound the top class's probability."),
    n0: int = typer.Option(_DEFAULTS.n0, "--n0", help="Votes that select the class."),
    alpha: float = typer.Option(_DEFAULTS.alpha, "--alpha", help="Failure probability of each certificate."),
    finetune_epochs: int = typer.Option(
        _DEFAULTS.finetune_epochs,
        "--finetune-epochs",
        help="Fine-tune with Gaussian noise first (0: certify the checkpoint as is).",
    ),
    finetune_lr: float = typer.Option(_DEFAULTS.finetune_lr, "--finetune-lr"),
    limit: int | None = options.limit("Certify only N test images (stratified).", min=None),
    radii: str = typer.Option(
        ",".join(f"{r:g}" for r in _DEFAULTS.radii), "--radii", help="Reported L2 radii, comma-separated."
    ),
    eps: str = typer.Option("2/255", "--eps", help="L-inf threat model to express as L2 radii."),
    attack_steps: int = typer.Option(_DEFAULTS.attack_steps, "--attack-steps", help="Smoothed PGD steps."),
    attack_samples: int = typer.Option(
        _DEFAULTS.attack_samples, "--attack-samples", help="Noise samples per PGD step (EOT)."
    ),
    attack_n: int | None = typer.Option(
        None, "--attack-n", help="Votes judging an attacked image (default n)."
    ),
    batch_size: int = options.batch_size(_DEFAULTS.batch_size, "Noisy copies per forward pass."),
    unit_size: int = typer.Option(_DEFAULTS.unit_size, "--unit-size", help="Test images per work unit."),
    seed: int = options.seed(_DEFAULTS.seed),
    device: str = options.device(),
    precision: str = options.precision(),
    force: bool = options.force(),
    resume: bool = options.resume(),
) -> None:
    """Certify a randomized-smoothing classifier (Cohen et al. 2019) and attack it (smoothed PGD), in work
    units kept in --out/units (--resume reuses them; shared out under `torchrun -m fortify -- certify`)."""
    from fortify.certify import run_certify
    from fortify.distributed import shutdown
    from fortify.evaluation.loading import check_checkpoint_path
    from fortify.runtime import Runtime

    settings = CertifySettings(
        sigma=sigma,
        finetune_epochs=finetune_epochs,
        finetune_lr=finetune_lr,
        n0=n0,
        n=n,
        alpha=alpha,
        batch_size=batch_size,
        limit=limit,
        radii=_radii(radii),
        eps=parse_number(eps, "--eps", lo=0, hi=1),
        attack_steps=attack_steps,
        attack_samples=attack_samples,
        attack_n=attack_n,
        unit_size=unit_size,
        seed=seed,
    ).validate()
    check_checkpoint_path(checkpoint)
    runtime = Runtime.resolve(device, precision)
    dist = claim_out(out, force, resume, runtime.device.type)
    with data_warnings_reported():
        payload = run_certify(
            checkpoint,
            None,
            data=data,
            split=split,
            out_dir=out,
            settings=settings,
            runtime=runtime,
            progress=True,
            resume=not force,
        )
    shutdown(dist)  # every process leaves the group together (rank 0 has written certify.json)
    if payload is not None:  # None: a torchrun process other than rank 0
        print_summary(payload, wide_console(120), out)


def register(app: typer.Typer) -> None:
    """Add `fortify certify` to the app."""
    app.command(NAME)(certify)
