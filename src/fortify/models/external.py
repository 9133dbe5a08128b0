"""Models from elsewhere: a TorchScript archive, a torch.export program (.pt2), or a torchvision / timm
architecture with a safetensors state dict, each behind a checked `InputContract` (models/contract.py).

Nothing is unpickled. A file's kind is read from its bytes, not trusted from its name: a torch.save
pickle (.pt/.pth/.bin) is refused with a hint instead of being loaded. What loading can execute:
- TorchScript: the archive's TorchScript code runs (built from its `code/` folder by TorchScript's own
  compiler, its `data.pkl` read by TorchScript's C++ loader, which builds only tensors and TorchScript
  types). That code can call operators already registered in this process (ATen, loaded extensions),
  but it cannot bring or import Python: no Python functions, no subprocesses.
- Exported program: only after `pt2check.check_pt2` has refused every route to Python code or pickles;
  the program then runs ATen/prims operators only.
- Architecture + safetensors: the architecture's code is torchvision's or timm's; the file holds tensors.
"""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path

import torch
import torchvision
from torch import nn

from fortify.errors import CheckpointError, ConfigError
from fortify.fileio import sha256_file
from fortify.models.contract import ContractModel, first_conv_channels, wrap_module
from fortify.models.pt2check import check_pt2
from fortify.models.registry import require_timm

PICKLE_HINT = (
    "fortify does not unpickle: save the model with torch.jit.save or torch.export.save, "
    "or its state dict as .safetensors and pass --arch"
)


def file_kind(path: str | Path) -> str:
    """ "safetensors", "torchscript" or "export", from the file's bytes; CheckpointError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file not found: {path}")
    with open(path, "rb") as f:
        head = f.read(16)
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                rel = {n.split("/", 1)[-1] for n in z.namelist()}
        except zipfile.BadZipFile as e:
            raise CheckpointError(f"{path}: unreadable zip archive") from e
        if "archive_format" in rel:
            return "export"
        if "constants.pkl" in rel and any(n.startswith("code/") for n in rel):
            return "torchscript"
        if "data.pkl" in rel:
            raise CheckpointError(f"{path}: a torch.save pickle; {PICKLE_HINT}")
        raise CheckpointError(f"{path}: a zip archive that is neither TorchScript nor an exported program")
    if head[:1] == b"\x80":  # pickle protocol 2+ (legacy torch.save)
        raise CheckpointError(f"{path}: a pickle; {PICKLE_HINT}")
    if len(head) > 8 and head[8:9] == b"{":  # safetensors: u64 header length, then a JSON header
        return "safetensors"
    raise CheckpointError(
        f"{path}: not a TorchScript archive, an exported program (.pt2) or a safetensors file"
    )


def _quiet_load(load, *args, **kwargs):
    # torch 2.9+ marks torch.jit as deprecated with a FutureWarning on every load: not the user's concern.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return load(*args, **kwargs)


def _load_torchscript(path: Path, image_size: int | None) -> tuple[nn.Module, int]:
    """The archive's module and its input size: the one given, else the one the archive records (an
    `image_size` extra file, or an int attribute `image_size` / `input_size` of the module). A size
    nobody states is refused rather than guessed: a model run at the wrong size still gives numbers."""
    extra = {"image_size": ""}
    try:
        module = _quiet_load(torch.jit.load, str(path), map_location="cpu", _extra_files=extra)
    except Exception as e:  # noqa: BLE001 - TorchScript's loader raises RuntimeError with C++ detail
        raise CheckpointError(f"{path}: cannot load TorchScript archive ({type(e).__name__})") from e
    recorded = _recorded_size(module, extra["image_size"])
    if image_size is not None and recorded is not None and image_size != recorded:
        raise ConfigError(f"{path.name} records {recorded} px input; image size was given as {image_size}")
    size = image_size if image_size is not None else recorded
    if size is None:
        raise ConfigError(
            f"{path.name} does not record its input size; give it with --image-size N (image_size=N), "
            "the size the model was trained at"
        )
    return module, size


def _recorded_size(module: nn.Module, extra_file: str | bytes) -> int | None:
    text = extra_file.decode() if isinstance(extra_file, bytes) else extra_file
    if text.strip().isdigit():
        return int(text)
    for name in ("image_size", "input_size"):
        value = getattr(module, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _load_export(path: Path, image_size: int | None) -> tuple[nn.Module, dict]:
    """The exported program as a module (guards not exec'd) and what its input shape fixes."""
    check_pt2(path)
    try:
        ep = _quiet_load(torch.export.load, str(path))
        module = ep.module(check_guards=False)
    except Exception as e:  # noqa: BLE001 - deserialization errors of any kind
        raise CheckpointError(f"{path}: cannot load exported program ({type(e).__name__})") from e
    users = list(ep.graph_signature.user_inputs)
    shapes = [n.meta["val"].shape for n in ep.graph.nodes if n.op == "placeholder" and n.name in users]
    if len(shapes) != 1 or len(shapes[0]) != 4:
        raise CheckpointError(f"{path}: the program must take one (N, C, H, W) image tensor")
    n, c, h, w = (int(d) if isinstance(d, int) else None for d in shapes[0])
    if h is not None and w is not None and h != w:
        raise ConfigError(f"{path.name} was exported for {h}x{w} input; fortify's images are square")
    if h is not None and image_size is not None and image_size != h:
        raise ConfigError(f"{path.name} was exported for {h} px input; image size was given as {image_size}")
    return module, {"batch": n, "channels": c, "image_size": h if h is not None else image_size}


def _first_conv_key(net: nn.Module) -> str | None:
    return next((f"{name}.weight" for name, m in net.named_modules() if isinstance(m, nn.Conv2d)), None)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if file_kind(path) != "safetensors":
        raise CheckpointError(f"{path}: weights must be a .safetensors state dict")
    try:
        state = load_file(str(path))
    except Exception as e:  # noqa: BLE001 - SafetensorError, OSError, a malformed header
        raise CheckpointError(f"{path}: not a valid safetensors file ({type(e).__name__})") from e
    return {k.removeprefix("module."): v for k, v in state.items()}  # DDP-saved weights


def _create(family: str, name: str, num_classes: int, channels: int) -> nn.Module:
    if family == "timm":
        timm = require_timm()
        if not timm.is_model(name):
            raise ConfigError(f"unknown timm model {name!r}")
        return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=channels)
    try:
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    except ValueError as e:
        raise ConfigError(f"unknown torchvision model {name!r}") from e


def build_arch(arch: str, weights: str | Path, num_classes: int, channels: int | None = None) -> nn.Module:
    """`tv:NAME` / `torchvision:NAME` / `NAME` or `timm:NAME`, with the state dict in `weights` loaded
    strictly (one-line error naming the first key that does not fit)."""
    family, sep, name = arch.partition(":")
    if not sep:
        family, name = "torchvision", arch
    family = {"tv": "torchvision"}.get(family, family)
    if family not in ("torchvision", "timm") or not name:
        raise ConfigError(f"unknown architecture {arch!r}; use tv:NAME (torchvision) or timm:NAME")
    if num_classes is None or num_classes < 2:
        raise ConfigError(f"an architecture needs num_classes >= 2, got {num_classes}")
    if family == "torchvision" and channels not in (None, 3):
        raise ConfigError(f"torchvision models take 3-channel input; channels was given as {channels}")
    state = _read_safetensors(Path(weights))
    net = _create(family, name, num_classes, channels or 3)
    key = _first_conv_key(net)
    if family == "timm" and channels is None and key in state and state[key].dim() == 4:
        if state[key].shape[1] != first_conv_channels(net):  # e.g. a 1-channel timm model
            net = _create(family, name, num_classes, int(state[key].shape[1]))
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    label = f"{family}:{name}"
    if missing or unexpected:
        raise CheckpointError(
            f"weights do not fit {label}: {len(missing)} missing, {len(unexpected)} unexpected keys "
            f"(e.g. {(missing or unexpected)[0]!r})"
        )
    bad = next((k for k, v in own.items() if state[k].shape != v.shape), None)  # in model order
    if bad is not None:
        raise CheckpointError(
            f"weights do not fit {label}: {bad!r} is {tuple(state[bad].shape)} in the file, "
            f"{tuple(own[bad].shape)} in the model"
        )
    net.load_state_dict(state, strict=True)
    return net


def load_external_model(
    source: str | Path | None = None,
    *,
    arch: str | None = None,
    weights: str | Path | None = None,
    num_classes: int | None = None,
    channels: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    image_size: int | None = None,
) -> ContractModel:
    """A model from elsewhere behind its checked input contract (`.contract`).

    Either `source`, a TorchScript archive or an exported program (.pt2), or `arch` with `weights`
    (a safetensors state dict) and `num_classes`. `channels` (1 or 3; default: what the model takes),
    `image_size` (default: what an exported program fixes or a TorchScript archive records; a TorchScript
    archive that records none needs it; 128 for an architecture) and `mean`/`std` (applied inside
    the wrapper, on [0, 1] pixels) make up the contract; a forward pass at load checks it."""
    if (source is None) == (arch is None):
        raise ConfigError("give a model file, or an architecture with its weights, not both")
    if arch is not None:
        if weights is None:
            raise ConfigError(f"architecture {arch} needs its weights (a .safetensors state dict)")
        net = build_arch(arch, weights, num_classes, channels)
        family = "timm" if arch.startswith("timm:") else "torchvision"
        return wrap_module(
            net,
            channels=channels,
            image_size=image_size,
            mean=mean,
            std=std,
            num_classes=num_classes,
            source=family,
            label=f"{family}:{arch.partition(':')[2] or arch}",
            path=str(weights),
            sha256=sha256_file(weights),
        )
    if weights is not None:
        raise ConfigError("weights go with an architecture; a model file carries its own")
    path = Path(source)
    kind = file_kind(path)
    if kind == "safetensors":
        raise ConfigError(f"{path}: a weights file; give its architecture too (e.g. tv:resnet18)")
    fixed: dict = {"batch": None, "channels": None, "image_size": image_size}
    if kind == "torchscript":
        module, fixed["image_size"] = _load_torchscript(path, image_size)
    else:
        module, fixed = _load_export(path, image_size)
        if channels is not None and fixed["channels"] not in (None, channels):
            raise ConfigError(
                f"{path.name} takes {fixed['channels']}-channel input; channels was given as {channels}"
            )
    return wrap_module(
        module,
        channels=channels or fixed["channels"],
        image_size=fixed["image_size"],
        mean=mean,
        std=std,
        num_classes=num_classes,
        source=kind,
        label=f"{kind}:{path.name}",
        path=str(path),
        sha256=sha256_file(path),
        batch=fixed["batch"],
    )
