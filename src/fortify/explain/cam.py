"""Class-activation maps through the `grad-cam` package (pytorch_grad_cam), for every registry model.

Two small tables say everything architecture-specific: which CAM class a method name means, and
which layer each architecture is explained at. The layer is the last block of the deepest stage
whose output grid is at least `MIN_GRID` cells a side at the input size: ResNet layer4 at 128 px
gives 4x4, but at 32 px it is 1x1 and a 1x1 CAM is one number spread over the image (constant,
so it says nothing about where the model looks); the table then falls back to layer3, layer2.

Maps are computed in fp32 with autocast disabled (bf16 activations and gradients quantize the
channel weights coarsely enough to move the map), on [0,1] inputs the model normalizes itself.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, LayerCAM, XGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from fortify.errors import ConfigError

METHODS: dict[str, Any] = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "eigencam": EigenCAM,  # gradient-free: first principal component of the activations
    "layercam": LayerCAM,
}

# Candidate layers per architecture, deepest first ("-1" = the stage's last block). Paths are inside
# the registry's `nn.Sequential(normalize=..., net=...)`.
_RESNET = ("net.layer4.-1", "net.layer3.-1", "net.layer2.-1")
TARGET_LAYERS: dict[str, tuple[str, ...]] = {
    "smallcnn": ("net.features.-1", "net.features.-2"),
    "resnet18": _RESNET,
    "resnet34": _RESNET,
    "resnet50": _RESNET,
}
MIN_GRID = 4


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ConfigError(f"unknown CAM method {method!r}; choose one of {', '.join(METHODS)}")
    return method


@dataclass(frozen=True)
class TargetLayer:
    name: str  # dotted module name as model.named_modules() spells it, e.g. "net.layer4.1"
    module: nn.Module
    grid: tuple[int, int]  # the layer's output height x width at the input size


def _resolve(model: nn.Module, path: str) -> tuple[str, nn.Module]:
    module, parts = model, []
    for part in path.split("."):
        if part.lstrip("-").isdigit():
            children = list(module.children())
            index = int(part) % len(children)
            module, part = children[index], str(index)
        else:
            module = getattr(module, part)
        parts.append(part)
    return ".".join(parts), module


def target_layer(model: nn.Module, arch: str, image_size: int) -> TargetLayer:
    """The layer CAMs of `arch` are taken at, for square inputs of `image_size` pixels."""
    if arch not in TARGET_LAYERS:
        raise ConfigError(f"no CAM target layer for architecture {arch!r}; known: {', '.join(TARGET_LAYERS)}")
    resolved = [_resolve(model, path) for path in TARGET_LAYERS[arch]]
    grids: dict[str, tuple[int, int]] = {}

    def record(name: str):
        def hook(_module, _inputs, output) -> None:  # returns None: the output is left alone
            grids[name] = tuple(output.shape[-2:])

        return hook

    hooks = [module.register_forward_hook(record(name)) for name, module in resolved]
    param = next(model.parameters())
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, _in_channels(model), image_size, image_size, device=param.device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    for name, module in resolved:
        if min(grids[name]) >= MIN_GRID:
            return TargetLayer(name, module, grids[name])
    name, module = resolved[-1]  # tiny inputs: the finest candidate is the best there is
    return TargetLayer(name, module, grids[name])


def _in_channels(model: nn.Module) -> int:
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    return conv.in_channels


class _InputGrad(nn.Module):
    """Makes the input require grad so activations do, with the weights frozen: the backward pass
    then computes only what the CAM needs, never parameter gradients."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.detach().requires_grad_(True))


@contextlib.contextmanager
def _frozen(model: nn.Module):
    flags = [p.requires_grad for p in model.parameters()]
    was_training = model.training
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        model.train(was_training)


def class_activation_maps(
    model: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    *,
    layer: TargetLayer,
    method: str = "gradcam",
    batch_size: int = 32,
) -> np.ndarray:
    """CAMs (float32, N x H x W, each scaled to [0,1] by the package) of class `targets[i]` on x[i].

    x: N x C x H x W in [0,1] on any device (moved to the model's). fp32, autocast off.
    """
    cam_class = METHODS[check_method(method)]
    device = next(model.parameters()).device
    wrapped = _InputGrad(model)
    out = []
    with _frozen(model), torch.enable_grad(), torch.autocast(device_type=device.type, enabled=False):
        cam = cam_class(model=wrapped, target_layers=[layer.module])
        try:
            for start in range(0, len(x), batch_size):
                xb = x[start : start + batch_size].to(device=device, dtype=torch.float32)
                tb = [ClassifierOutputTarget(int(t)) for t in targets[start : start + batch_size]]
                out.append(np.asarray(cam(input_tensor=xb, targets=tb), dtype=np.float32))
        finally:
            cam.activations_and_grads.release()
    if not out:
        return np.zeros((0, *x.shape[-2:]), dtype=np.float32)
    # The package rescales each map by its max + 1e-7 and bilinear resizing can overshoot a hair.
    return np.clip(np.concatenate(out), 0.0, 1.0)
