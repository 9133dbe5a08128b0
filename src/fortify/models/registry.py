"""Model registry: torchvision ResNets with a grayscale stem, a compact CNN, and any timm model.

Every model is `nn.Sequential(normalize=Normalize, net=<backbone>)` and maps float pixels in
[0,1], shape (N, in_channels, H, W), to logits (N, num_classes).

Grayscale and ImageNet weights: the pretrained RGB first conv is folded into one channel by
summing its weights over RGB, and the model normalizes with the channel-averaged ImageNet
statistics (mean 0.449, std 0.226); the constant offset that the averaged mean introduces is
absorbed into bn1's running mean. For a gray image replicated to RGB this reproduces the RGB
network's stem activations up to the std averaging (per-channel stds differ by < 2%) and the
zero-padded border.
`timm:NAME` builds timm's model with `in_chans` channels from scratch (the optional extra
`pip install fortify[timm]`), with the same normalization layer in front.
Without pretrained weights a 1-channel model normalizes with mean 0.5 / std 0.25 (CT slices in
[0,1] centre on mid-gray with a wide spread), so BN sees roughly unit-scale inputs from step one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torch import nn

from fortify.errors import CheckpointError, ConfigError
from fortify.models.normalize import GRAY_MEAN, GRAY_STD, IMAGENET_MEAN, IMAGENET_STD, Normalize
from fortify.models.smallcnn import SmallCNN

_RESNETS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": torchvision.models.resnet18,
    "resnet34": torchvision.models.resnet34,
    "resnet50": torchvision.models.resnet50,
}
# The best torchvision ImageNet weights for each backbone (used only when pretrained=True).
_PRETRAINED = {
    "resnet18": "ResNet18_Weights.IMAGENET1K_V1",
    "resnet34": "ResNet34_Weights.IMAGENET1K_V1",
    "resnet50": "ResNet50_Weights.IMAGENET1K_V2",
}


TIMM_PREFIX = "timm:"


def list_models() -> list[str]:
    """The built-in names; besides them, `timm:NAME` builds any timm model."""
    return [*_RESNETS, "smallcnn"]


def is_model_name(name: str) -> bool:
    """A built-in name, or `timm:NAME` (whether timm has NAME is checked when the model is built)."""
    return name in list_models() or (name.startswith(TIMM_PREFIX) and len(name) > len(TIMM_PREFIX))


def require_timm():
    """The timm module, or a one-line ConfigError saying how to install it."""
    try:
        import timm
    except ImportError as e:
        raise ConfigError("timm is not installed: pip install fortify[timm]") from e
    return timm


def _timm_net(name: str, num_classes: int, in_channels: int) -> nn.Module:
    timm = require_timm()
    if not timm.is_model(name):
        raise ConfigError(f"unknown timm model {name!r}")
    return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels)


def _normalize_for(in_channels: int, imagenet: bool) -> Normalize:
    if imagenet and in_channels == 3:
        return Normalize(IMAGENET_MEAN, IMAGENET_STD)
    if imagenet:
        m, s = sum(IMAGENET_MEAN) / 3, sum(IMAGENET_STD) / 3
        return Normalize((m,) * in_channels, (s,) * in_channels)
    if in_channels == 1:
        return Normalize(GRAY_MEAN, GRAY_STD)
    return Normalize(GRAY_MEAN * in_channels, GRAY_STD * in_channels)


def fold_rgb_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Turn an RGB conv weight (out, 3, k, k) into one for `in_channels` inputs.

    One channel: the sum over RGB, so a gray image g gives the same response as (g, g, g).
    k channels: the sum spread evenly over k copies (each gets sum/k), same invariance.
    """
    if weight.shape[1] == in_channels:
        return weight
    if weight.shape[1] != 3:
        raise CheckpointError(f"cannot fold a first conv with {weight.shape[1]} input channels")
    total = weight.sum(dim=1, keepdim=True)
    return total.repeat(1, in_channels, 1, 1) / in_channels


def _fold_offset(rgb_weight: torch.Tensor) -> torch.Tensor:
    """Per-output-channel shift between the RGB stem and the folded one on a gray image.

    With per-channel stats (m_c, s_c) the RGB stem computes sum_c W_c (g - m_c) / s_c; the folded
    stem computes sum_c W_c (g - m) / s with the averaged (m, s). Apart from the small
    g * (1/s - 1/s_c) term, they differ by a constant per output channel,
    delta = sum_c W_c (m / s - m_c / s_c), which bn1 removes if its running mean absorbs it
    (in train mode batch statistics remove it anyway).
    """
    m, s = sum(IMAGENET_MEAN) / 3, sum(IMAGENET_STD) / 3
    per_channel = torch.tensor([m / s - mc / sc for mc, sc in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)])
    return (rgb_weight.sum(dim=(2, 3)) * per_channel.to(rgb_weight.dtype)).sum(dim=1)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as e:  # unpickling refused, corrupt file, wrong format
        raise CheckpointError(f"cannot read weights file {path}: {type(e).__name__}") from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} is not a torchvision state dict (name -> tensor)")
    return state


def _pretrained_state_dict(name: str) -> dict[str, torch.Tensor]:
    try:
        weights = torchvision.models.get_weight(_PRETRAINED[name])
        return weights.get_state_dict(progress=False)
    except Exception as e:  # no internet, proxy, corrupt download
        raise CheckpointError(
            f"cannot download ImageNet weights for {name} ({type(e).__name__}); "
            "pass a local torchvision state dict with --weights FILE"
        ) from e


def _load_backbone_weights(
    net: nn.Module, state: dict[str, torch.Tensor], in_channels: int, name: str
) -> None:
    state = {k.removeprefix("module."): v for k, v in state.items()}
    # The classifier head is task-specific: keep ours (num_classes), drop ImageNet's 1000-way fc.
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    if "conv1.weight" in state and state["conv1.weight"].shape[1] != in_channels:
        rgb = state["conv1.weight"]
        state["conv1.weight"] = fold_rgb_conv(rgb, in_channels)
        if "bn1.running_mean" in state:
            state["bn1.running_mean"] = state["bn1.running_mean"] - _fold_offset(rgb)
    own = net.state_dict()
    missing = [k for k in own if not k.startswith("fc.") and k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise CheckpointError(
            f"weights do not fit {name}: {len(missing)} missing, {len(unexpected)} unexpected keys "
            f"(e.g. {(missing or unexpected)[0]!r})"
        )
    bad = [k for k, v in state.items() if own[k].shape != v.shape]
    if bad:
        raise CheckpointError(f"weights do not fit {name}: shape mismatch at {bad[0]!r}")
    net.load_state_dict(state, strict=False)


def build_model(
    name: str,
    num_classes: int,
    *,
    in_channels: int = 1,
    pretrained: bool = False,
    weights_file: str | Path | None = None,
) -> nn.Module:
    """Build a classifier whose first layer is its own normalization (input: pixels in [0,1])."""
    if not is_model_name(name):
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(list_models())} or timm:NAME")
    if num_classes < 2:
        raise ConfigError(f"num_classes must be >= 2, got {num_classes}")
    if in_channels < 1:
        raise ConfigError(f"in_channels must be >= 1, got {in_channels}")
    imagenet = pretrained or weights_file is not None
    if name.startswith(TIMM_PREFIX):
        if imagenet:
            raise ConfigError(f"{name} trains from scratch here; --pretrained/--weights are for the resnets")
        net: nn.Module = _timm_net(name.removeprefix(TIMM_PREFIX), num_classes, in_channels)
    elif name == "smallcnn":
        if imagenet:
            raise ConfigError("smallcnn has no ImageNet weights; use a resnet for --pretrained/--weights")
        net = SmallCNN(num_classes, in_channels)
    else:
        net = _RESNETS[name](weights=None, num_classes=num_classes)
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        if weights_file is not None:
            _load_backbone_weights(net, _read_state_dict(Path(weights_file)), in_channels, name)
        elif pretrained:
            _load_backbone_weights(net, _pretrained_state_dict(name), in_channels, name)
    return nn.Sequential(OrderedDict(normalize=_normalize_for(in_channels, imagenet), net=net))
