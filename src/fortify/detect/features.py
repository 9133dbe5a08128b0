"""Intermediate features for the detector: forward hooks on a few layers, globally average-pooled.

Lee et al. (2018) fit their Gaussians to the mean over space of each residual stage's output; the
same layers for every ResNet depth, the three conv blocks for smallcnn. Other architectures have
no default: the user names the layers (module paths inside the full model, e.g. "net.layer3").
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from fortify.errors import ConfigError

# Module paths inside `build_model`'s nn.Sequential(normalize=..., net=<backbone>).
DEFAULT_LAYERS: dict[str, tuple[str, ...]] = {
    **{
        name: ("net.layer1", "net.layer2", "net.layer3", "net.layer4")
        for name in ("resnet18", "resnet34", "resnet50")
    },
    "smallcnn": ("net.features.0", "net.features.1", "net.features.2"),
}


def resolve_layers(
    model: nn.Module, model_name: str | None, layers: Sequence[str] | None = None
) -> list[str]:
    """The layer table's entry for `model_name`, or the user's `layers`; every name must exist."""
    if layers:
        chosen = list(layers)
    elif model_name in DEFAULT_LAYERS:
        chosen = list(DEFAULT_LAYERS[model_name])
    else:
        raise ConfigError(
            f"no default detector layers for model {model_name!r} (known: {', '.join(DEFAULT_LAYERS)}); "
            "name them with layers=[...]"
        )
    names = dict(model.named_modules())
    missing = [n for n in chosen if n not in names]
    if missing:
        raise ConfigError(f"detector layer {missing[0]!r} is not a module of this {model_name} model")
    return chosen


def pool(out: torch.Tensor) -> torch.Tensor:
    """(N, C, *spatial) -> (N, C) float32 by the mean over space; (N, D) passes through."""
    out = out.float()
    return out.flatten(2).mean(dim=2) if out.dim() > 2 else out


@contextlib.contextmanager
def tap(model: nn.Module, layers: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Within the block, every forward pass of `model` leaves each layer's pooled output in the
    yielded dict (attached to the graph, so gradients flow through it). Hooks removed on exit."""
    store: dict[str, torch.Tensor] = {}
    handles = []
    for name in layers:

        def hook(_m: nn.Module, _args: tuple, out: torch.Tensor, name: str = name) -> None:
            store[name] = pool(out)

        handles.append(model.get_submodule(name).register_forward_hook(hook))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()
