"""Checkpoints that load without executing code.

A checkpoint `stem` is three files written atomically (temp file + rename):
- `stem.safetensors`: the model weights (safetensors never unpickles anything);
- `stem.json`: everything `load_model` needs (model name, num_classes, in_channels, image_size,
  classes, mode, eps, epoch, metrics, config, split reference) plus the sha256 of the weights
  file, so a JSON paired with the wrong weights is detected;
- `stem.state.pt` (optional): optimizer/scheduler/RNG state for `--resume`, read with
  `torch.load(weights_only=True)`, which refuses pickles that would construct arbitrary objects.
The JSON is written last: a crash in between leaves a JSON that still describes the old weights,
and the hash check turns that into a clean `CheckpointError` rather than a silently wrong model.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fortify.errors import CheckpointError
from fortify.fileio import atomic_write, read_json, sha256_file, write_json
from fortify.models import build_model, with_class_bias

FORMAT = "fortify-checkpoint/1"
REQUIRED_KEYS = ("model", "num_classes", "in_channels", "image_size", "classes")


def _unwrap(model: nn.Module) -> nn.Module:
    # DistributedDataParallel keeps the real model in `.module`; save the bare weights.
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG state as plain values and tensors (weights_only-safe)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    stem: str | Path,
    model: nn.Module,
    info: dict,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    rng: bool = True,
    extra_state: dict | None = None,
) -> None:
    """Write stem.safetensors + stem.json (+ stem.state.pt when optimizer/scheduler/extra_state given)."""
    from safetensors.torch import save_file

    stem = Path(stem)
    missing = [k for k in REQUIRED_KEYS if k not in info]
    if missing:
        raise ValueError(f"checkpoint info lacks {missing}")
    weights = {k: v.detach().cpu().contiguous() for k, v in _unwrap(model).state_dict().items()}
    weights_path = stem.with_name(stem.name + ".safetensors")
    atomic_write(weights_path, lambda p: save_file(weights, str(p), metadata={"format": FORMAT}))
    if optimizer is not None or scheduler is not None or extra_state is not None:
        state: dict[str, Any] = {}
        if optimizer is not None:
            state["optimizer"] = optimizer.state_dict()
        if scheduler is not None:
            state["scheduler"] = scheduler.state_dict()
        if rng:
            state["rng"] = rng_state()
        if extra_state:
            state["extra"] = extra_state
        atomic_write(stem.with_name(stem.name + ".state.pt"), lambda p: torch.save(state, p))
    record = {
        "format": FORMAT,
        **info,
        "weights_file": weights_path.name,
        "weights_sha256": sha256_file(weights_path),
    }
    write_json(stem.with_name(stem.name + ".json"), record)


def _resolve(checkpoint: str | Path) -> tuple[Path, Path]:
    """Map a checkpoint reference to (weights .safetensors, info .json)."""
    path = Path(checkpoint)
    if path.is_dir():  # a run directory: its best checkpoint
        path = path / "best.safetensors"
    if path.suffix == ".json":
        path = path.with_suffix(".safetensors")
    if path.suffix != ".safetensors":
        raise CheckpointError(
            f"{checkpoint}: not a fortify checkpoint (expected a .safetensors file with its .json beside it)"
        )
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    info_path = path.with_suffix(".json")
    if not info_path.is_file():
        raise CheckpointError(f"{path}: missing {info_path.name} beside it")
    return path, info_path


def read_checkpoint_info(checkpoint: str | Path) -> dict:
    """The checkpoint's JSON, validated (keys, format, weights hash)."""
    weights_path, info_path = _resolve(checkpoint)
    try:
        info = read_json(info_path)
    except (OSError, ValueError) as e:
        raise CheckpointError(
            f"{info_path}: unreadable checkpoint JSON ({getattr(e, 'detail', type(e).__name__)})"
        ) from e
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise CheckpointError(f"{info_path}: not a {FORMAT} checkpoint description")
    missing = [k for k in REQUIRED_KEYS if k not in info]
    if missing:
        raise CheckpointError(f"{info_path}: missing {', '.join(missing)}")
    if info.get("weights_sha256") != sha256_file(weights_path):
        raise CheckpointError(f"{info_path} does not describe {weights_path.name} (weights hash differs)")
    return info


def load_model(checkpoint: str | Path, *, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model from `checkpoint` (.safetensors, its .json, or a run dir -> best) in eval mode."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights_path, _ = _resolve(checkpoint)
    info = read_checkpoint_info(weights_path)
    try:
        weights = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights_path}: not a valid safetensors file ({type(e).__name__})") from e
    try:
        model = build_model(info["model"], int(info["num_classes"]), in_channels=int(info["in_channels"]))
    except Exception as e:
        raise CheckpointError(f"{weights_path}: cannot rebuild model {info['model']!r}: {e}") from e
    own = model.state_dict()
    if set(own) != set(weights) or any(own[k].shape != weights[k].shape for k in own):
        raise CheckpointError(f"{weights_path}: weights do not match model {info['model']!r} in its JSON")
    model.load_state_dict(weights)
    bias = info.get("class_bias")  # the operating point chosen on validation (`fortify operating-point`)
    try:
        if bias is not None and (not isinstance(bias, list) or len(bias) != int(info["num_classes"])):
            raise ValueError(f"expected a list of {info['num_classes']} numbers, got {bias!r}")
        model = with_class_bias(model, bias)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{weights_path}: class_bias in its JSON is not usable: {e}") from e
    return model.to(device).eval(), info


def load_training_state(path: str | Path) -> dict:
    """Optimizer/scheduler/RNG state for resume; never runs code from the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"training state not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for anything beyond tensors and plain containers
        raise CheckpointError(
            f"{path}: refused to load training state ({type(e).__name__}); "
            "it is corrupt or contains non-tensor objects"
        ) from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: training state is not a dict")
    return state
