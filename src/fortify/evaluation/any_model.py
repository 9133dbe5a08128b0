"""`fortify.evaluate(model, data)`: the full evaluation of any PyTorch model, for notebooks.

The model is put behind a checked input contract (`fortify.models.wrap_module`) and evaluated exactly
like a fortify checkpoint; the returned dict is what `fortify evaluate` writes as results.json.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch import nn

from fortify.errors import ConfigError
from fortify.evaluation.evaluate import evaluate_checkpoint
from fortify.evaluation.settings import EvalSettings
from fortify.models import ContractModel, load_external_model, wrap_module


def evaluate_model(
    model: nn.Module | str | Path,
    data: str | Path,
    settings: EvalSettings | None = None,
    *,
    channels: int | None = None,
    image_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **kwargs,
) -> dict:
    """Evaluate `model` on the test split of `data` (a class-folder dataset or "phantom[:n=K]") and
    return the results.json dict (also written to `out_dir=` when given).

    `model`: any nn.Module mapping (N, C, H, W) images to logits, a `ContractModel`, a TorchScript
    archive or exported program (.pt2) path, or a fortify checkpoint path. The input contract:
    `channels` (1 or 3; default what the model's first convolution takes; the gray slice is repeated
    for 3), `image_size` (default 128, or what an exported program fixes) and `mean`/`std` (the
    normalization the model expects, applied inside a wrapper so attacks stay in [0, 1] pixels; leave
    them out when the model normalizes itself). `settings` (`EvalSettings`: threat model, attacks, budgets;
    e.g. `EvalSettings.preset("smoke")`) and the other keyword arguments (split, out_dir, runtime,
    progress, ...) are `evaluate_checkpoint`'s. The model is put in eval mode.
    """
    contract_args = {"channels": channels, "image_size": image_size, "mean": mean, "std": std}
    if isinstance(model, (str, Path)):
        path = Path(model)
        if path.is_dir() or path.suffix in (".safetensors", ".json"):
            if any(v is not None for v in contract_args.values()):
                raise ConfigError("a fortify checkpoint carries its own input contract")
            return evaluate_checkpoint(path, data=data, settings=settings, **kwargs)
        model = load_external_model(path, **contract_args)
    elif isinstance(model, ContractModel):
        if any(v is not None for v in contract_args.values()):
            raise ConfigError("this model already has its input contract")
    elif isinstance(model, nn.Module):
        model = wrap_module(model, **contract_args)
    else:
        raise ConfigError(f"expected a torch.nn.Module or a model file, got {type(model).__name__}")
    return evaluate_checkpoint(model, data=data, settings=settings, **kwargs)
