"""`fortify explain`: argument parsing and a short summary; the logic is in fortify.explain."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from fortify.cli import options
from fortify.cli.printing import data_warnings_reported, wide_console
from fortify.errors import ConfigError

NAME = "explain"


def _summary(payload: dict, console: Console, out: Path) -> None:
    def fmt(s: dict | None) -> str:
        if not s or s.get("mean") is None:
            return "n/a"
        ci = s.get("ci")
        return f"{s['mean']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")

    console.print(
        f"{payload['cam']['package']}, attack {payload['attack']['spec']}, n={payload['data']['n']}"
    )
    for label, m in payload["models"].items():
        console.print(
            f"{label} ({m['model']}, layer {m['target_layer']}): clean {m['clean']['accuracy']:.1%}, "
            f"under attack {m['adversarial']['accuracy']:.1%}; "
            f"rank correlation {fmt(m['rank_correlation']['all'])}, "
            f"top overlap {fmt(m['top_overlap']['all'])}"
        )
    if payload.get("verdict"):
        console.print(payload["verdict"])
    transfer = payload.get("transfer")
    if transfer:
        sur = transfer["surrogate"]
        console.print(
            f"surrogate {sur['arch']} ({sur['epochs']} epochs): "
            f"clean {transfer['surrogate_clean']['accuracy']:.1%}"
        )
        for label, t in transfer["targets"].items():
            console.print(
                f"  {label}: transferred {t['transfer']['accuracy']:.1%}, "
                f"white-box {t['white_box']['accuracy']:.1%}"
            )
    console.print(
        f"explain: {out / 'explain.json'}  figures: {out / 'figures'}  ({payload['seconds']['total']:.0f} s)"
    )


def explain(
    normal: Path | None = typer.Option(None, "--normal", help="Normally trained checkpoint .safetensors."),
    adversarial: Path | None = typer.Option(None, "--adversarial", help="Adversarially trained checkpoint."),
    checkpoint: Path | None = typer.Option(
        None, "--checkpoint", help="One checkpoint alone (no paired numbers)."
    ),
    data: str = options.data(),
    split: Path | None = options.split(),
    out: Path = options.out("Output folder for explain.json and figures/."),
    method: str = typer.Option(
        "gradcam", "--method", help="gradcam | gradcam++ | xgradcam | eigencam | layercam"
    ),
    target: str = typer.Option("predicted", "--target", help="Class each map explains: predicted | true."),
    attack: str = typer.Option(
        "pgd:eps=2/255,steps=10", "--attack", help="White-box attack spec (also crafted on the surrogate)."
    ),
    limit: int | None = options.limit("Use only N test images (class-stratified).", min=2),
    surrogate: str = typer.Option(
        "smallcnn", "--surrogate", help="Surrogate architecture for transfer, or 'none'."
    ),
    surrogate_epochs: int = typer.Option(3, "--surrogate-epochs", min=1),
    batch_size: int = options.batch_size(32),
    seed: int = options.seed(),
    device: str = options.device(),
    precision: str = options.precision(help="auto | fp32 | bf16 (attacks; CAMs are always fp32)"),
    force: bool = options.force(),
) -> None:
    """Class-activation maps on clean and attacked scans, the attention shift in numbers, cross-architecture
    transfer."""
    from fortify.evaluation import check_out_dir
    from fortify.evaluation.loading import check_checkpoint_path
    from fortify.explain import ExplainSettings, explain_checkpoints
    from fortify.runtime import Runtime

    # Every check that can fail on user input runs before any work, so a mistake costs nothing.
    if checkpoint is not None and (normal is not None or adversarial is not None):
        raise ConfigError("give --checkpoint alone, or --normal and/or --adversarial")
    checkpoints = (
        {"checkpoint": checkpoint}
        if checkpoint is not None
        else {k: v for k, v in (("normal", normal), ("adversarial", adversarial)) if v is not None}
    )
    if not checkpoints:
        raise ConfigError("give --normal and --adversarial (or one of them), or --checkpoint")
    for path in checkpoints.values():
        check_checkpoint_path(path)
    settings = ExplainSettings(
        method=method,
        target=target,
        attack=attack,
        limit=limit,
        surrogate=surrogate,
        surrogate_epochs=surrogate_epochs,
        batch_size=batch_size,
        seed=seed,
    ).validate()
    check_out_dir(out, force)
    runtime = Runtime.resolve(device, precision)
    with data_warnings_reported():
        payload = explain_checkpoints(
            checkpoints,
            data=data,
            split=split,
            out_dir=out,
            settings=settings,
            runtime=runtime,
            progress=True,
        )
    _summary(payload, wide_console(120), out)


def register(app: typer.Typer) -> None:
    """Add `fortify explain` to the app."""
    app.command(NAME)(explain)
