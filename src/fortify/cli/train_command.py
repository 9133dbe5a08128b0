"""`fortify train`: parse options into a TrainConfig, call fortify.training.train, print the summary."""

from __future__ import annotations

import inspect
import json
import warnings
from pathlib import Path
from typing import Any

import typer

from fortify.cli import options
from fortify.number_text import parse_number

# The recipe `fortify train`'s defaults follow: the quick profile's normal model (configs/profiles/
# quick.yaml), the one measured to work on IQ-OTH/NCCD on a CPU, so a model trained by hand is as good
# as reproduce's. TrainConfig's own defaults stay the library's (other profiles build on them).
RECIPE_PROFILE = "quick"
RECIPE_STAGE = "normal"
NAME = "train"


def recipe_defaults() -> dict[str, Any]:
    """TrainConfig values of the quick profile's normal model (its model, size, train and normal sections)."""
    from fortify.pipeline.profiles import load_profile

    prof = load_profile(RECIPE_PROFILE)
    return {
        "model": prof.model,
        "image_size": prof.image_size,
        "eps": prof.eps,
        **prof.train,
        **getattr(prof, RECIPE_STAGE),
    }


def train_parameters(recipe: dict[str, Any]) -> list[inspect.Parameter]:
    """`fortify train`'s options: one per TrainConfig field (its default, type and comment, the recipe's
    default where it has one), plus --resume, --force and --json."""
    from fortify.attacks import format_value
    from fortify.models import list_models
    from fortify.training.config import MODES, TrainConfig

    params = options.dataclass_parameters(
        TrainConfig,
        defaults=recipe,
        required=("data", "out"),
        help={
            "data": options.DATA_HELP,
            "device": options.DEVICE_HELP,
            "split": "Split manifest, or 'given' (the dataset's own train/, val/, test/ folders); "
            "default: make one in --out.",
            "model": " | ".join([*list_models(), "timm:NAME"]),
            "mode": " | ".join(MODES),
            "eps": "L-inf radius in [0,1] pixels, e.g. 2/255.",
        },
        parsers={"eps": lambda text: parse_number(text, "eps", lo=0)},
        shown={"eps": format_value(recipe["eps"])},
    )
    return params + [
        options.keyword("resume", options.resume("Continue from RUN_DIR/last.*."), bool),
        options.keyword("force", options.force("Discard an existing run in --out."), bool),
        options.keyword("as_json", options.as_json("Print the final summary as JSON."), bool),
    ]


def train_help(recipe: dict[str, Any]) -> str:
    """`fortify train`'s help, which names the recipe its defaults follow."""
    stated = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in recipe.items() if k != "eps")
    return (
        "Train a classifier (standard or adversarial) into a resumable run directory.\n\n"
        f"Defaults are the {RECIPE_PROFILE} profile's {RECIPE_STAGE}-model recipe ({stated}); "
        "every other default is TrainConfig's."
    )


def train(*, resume: bool, force: bool, as_json: bool, **values: Any) -> None:
    """Train a classifier (standard or adversarial) into a resumable run directory."""  # register: train_help
    from fortify.cli.printing import note_nothing_to_resume, nothing_in, warning_line
    from fortify.training import TrainConfig
    from fortify.training import train as run_training
    from fortify.training.selection import CatastrophicOverfittingWarning

    cfg = TrainConfig(**values)
    _check_inputs(cfg)  # before the run directory gets its config.yaml
    if resume and nothing_in(cfg.out):
        note_nothing_to_resume(cfg.out)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CatastrophicOverfittingWarning)
        summary = run_training(cfg, resume=resume, force=force, progress=not as_json)
    for w in caught:
        if issubclass(w.category, CatastrophicOverfittingWarning):
            warning_line(w.message)
    if summary.get("rank", 0) != 0:
        return  # under torchrun only rank 0 reports
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    _print_summary(summary, cfg)


def _check_inputs(cfg: Any) -> None:
    """The files and folders the run reads exist: a missing one is one line, and --out stays untouched."""
    from fortify.data.phantom import parse_phantom_spec
    from fortify.errors import CheckpointError, DataError

    if parse_phantom_spec(cfg.data) is None and not Path(cfg.data).expanduser().is_dir():
        raise DataError(f"dataset path does not exist: {cfg.data} (--data: a folder or 'phantom[:n=K]')")
    if cfg.split not in (None, "given") and not Path(cfg.split).expanduser().is_file():
        raise DataError(f"split manifest not found: {cfg.split}")
    if cfg.weights is not None and not Path(cfg.weights).expanduser().is_file():
        raise CheckpointError(f"weights file not found: {cfg.weights}")
    if cfg.init is not None:
        from fortify.training.checkpoints import read_checkpoint_info

        read_checkpoint_info(Path(cfg.init).expanduser())  # missing, foreign or broken: one line


def _print_summary(summary: dict[str, Any], cfg: Any) -> None:
    """The run directory, the best epoch and its validation accuracies, why it stopped, the checkpoints."""
    best = summary["best"] or {}
    print(f"run dir: {summary['run_dir']}  ({summary['epochs_completed']} epochs)")
    line = f"best epoch {summary['best_epoch']} by {summary['selection']}"
    if best:
        line += f": val clean {best['val_clean_acc']:.4f}"
        if best.get("val_robust_acc") is not None:
            line += f", val robust {best['val_robust_acc']:.4f}"
        if best.get("val_clean_bal_acc") is not None:
            line += f", val balanced {best['val_clean_bal_acc']:.4f}"
    print(line)
    if summary["stopped"]:
        print(f"stopped: {summary['stopped']}")
    print(f"checkpoints: {Path(cfg.out) / 'best.safetensors'}, {Path(cfg.out) / 'last.safetensors'}")


def register(app: typer.Typer) -> None:
    """Add `fortify train` to the app. Its options and help are built here, from TrainConfig and the
    shipped quick profile, which is why registering reads the profiles."""
    recipe = recipe_defaults()
    options.with_signature(train, train_parameters(recipe))
    train.__doc__ = train_help(recipe)
    app.command(NAME)(train)
