"""The options that name a model from elsewhere, shared by `evaluate` and `attack`, and the one call that
turns them (with `--checkpoint`) into what the evaluation takes: a fortify checkpoint's path, or a
model behind its input contract (`fortify.models.load_external_model`)."""

from __future__ import annotations

from pathlib import Path

import typer

from fortify.errors import ConfigError

CHECKPOINT = typer.Option(
    None,
    "--checkpoint",
    help="fortify checkpoint .safetensors (its .json beside it), TorchScript archive, or exported "
    "program (.pt2).",
)
ARCH = typer.Option(
    None, "--arch", help="Architecture for --weights: tv:NAME (torchvision) or timm:NAME (the timm extra)."
)
WEIGHTS = typer.Option(None, "--weights", help="State dict (.safetensors) for --arch.")
NUM_CLASSES = typer.Option(
    None, "--num-classes", min=2, help="Classes the model outputs (needed with --arch)."
)
CHANNELS = typer.Option(
    None, "--channels", help="Input channels the model takes, 1 or 3 (3: the gray slice is repeated)."
)
IMAGE_SIZE = typer.Option(
    None,
    "--image-size",
    min=8,
    help="Input size for a model from elsewhere (default: the .pt2's or the TorchScript archive's "
    "recorded size, needed where it records none; 128 for --arch).",
)
MEAN = typer.Option(
    None,
    "--mean",
    help="Normalization the model expects, applied inside fortify: 0.485,0.456,0.406 or imagenet.",
)
STD = typer.Option(None, "--std", help="Its std, as --mean: 0.229,0.224,0.225 or imagenet.")


def parse_stats(text: str | None, option: str, which: str) -> tuple[float, ...] | None:
    """'0.5' / '0.485,0.456,0.406' / 'imagenet' -> floats; one-line ConfigError otherwise."""
    if text is None:
        return None
    if text.strip().lower() == "imagenet":
        from fortify.models.normalize import IMAGENET_MEAN, IMAGENET_STD

        return IMAGENET_MEAN if which == "mean" else IMAGENET_STD
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError as e:
        raise ConfigError(f"{option} {text!r} is not a comma-separated list of numbers") from e


def open_model_options(
    checkpoint: Path | None,
    arch: str | None,
    weights: Path | None,
    num_classes: int | None,
    channels: int | None,
    image_size: int | None,
    mean: str | None,
    std: str | None,
):
    """A fortify checkpoint's path (loaded later, by the evaluation), or a model from elsewhere, loaded
    and checked now so that a mismatch costs nothing."""
    from fortify.evaluation.loading import check_checkpoint_path
    from fortify.models import load_external_model

    contract = {
        "num_classes": num_classes,
        "channels": channels,
        "image_size": image_size,
        "mean": parse_stats(mean, "--mean", "mean"),
        "std": parse_stats(std, "--std", "std"),
    }
    if (checkpoint is None) == (arch is None):
        raise ConfigError("give --checkpoint FILE, or --arch NAME with --weights FILE (not both)")
    if arch is not None:
        if num_classes is None:
            raise ConfigError("--arch needs --num-classes")
        return load_external_model(arch=arch, weights=weights, **contract)
    if weights is not None:
        raise ConfigError("--weights goes with --arch; a --checkpoint file carries its own weights")
    if checkpoint.is_dir() or checkpoint.suffix in (".safetensors", ".json"):
        given = [k for k, v in contract.items() if v is not None]
        if given:
            option = "--" + given[0].replace("_", "-")
            raise ConfigError(f"{option} is for models from elsewhere; a fortify checkpoint records its own")
        check_checkpoint_path(checkpoint)
        return checkpoint
    return load_external_model(checkpoint, **contract)
