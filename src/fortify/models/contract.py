"""The input contract of a model from elsewhere, and the wrapper that makes the model keep it.

fortify's images are grayscale pixels in [0, 1], shape (N, 1, H, W), and every attack perturbs them
there. A model trained elsewhere may want 3 channels, or normalized input. `ContractModel` puts the
difference inside the model: it repeats the gray channel for a 3-channel model and applies
`(x - mean) / std` itself when given mean/std, so attacks and epsilons stay in [0, 1] pixel space.
`InputContract` records all of it (results.json keeps it under `checkpoint.input_contract`).

A wrapped model is only evaluated, never trained here: it is put in eval mode once and stays there
(an exported program cannot switch modes at all).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from fortify.errors import ConfigError
from fortify.models.normalize import Normalize

DEFAULT_IMAGE_SIZE = 128  # fortify's default input size, used when nothing says otherwise
SOURCES = ("fortify", "torchscript", "export", "torchvision", "timm", "module")


@dataclass(frozen=True)
class InputContract:
    """What the model is given. `channels`: what it takes (the gray slice is repeated for 3);
    `normalization`: "inside" (the model takes [0, 1] pixels and normalizes itself, if at all) or
    "wrapper" (fortify applies mean/std in front of it)."""

    source: str  # one of SOURCES
    model: str  # a label: "timm:resnet18", "torchscript:net.pt", "module:MyNet"
    channels: int
    image_size: int
    num_classes: int  # the model's output width, measured by a forward pass at load
    normalization: str = "inside"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    path: str | None = None  # the file loaded (archive, or the weights for an architecture)
    sha256: str | None = None
    batch: int | None = None  # an exported program traced for one batch size only

    def as_dict(self) -> dict:
        out = asdict(self)
        for key in ("mean", "std"):
            out[key] = None if out[key] is None else list(out[key])
        out["gray_to_channels"] = "repeat" if self.channels > 1 else None
        return out


class ContractModel(nn.Module):
    """`model` behind its input contract: gray [0, 1] pixels in, logits out."""

    def __init__(self, model: nn.Module, contract: InputContract) -> None:
        super().__init__()
        self.model = model
        self.contract = contract
        self.normalize = (
            Normalize(contract.mean, contract.std) if contract.normalization == "wrapper" else None
        )
        if contract.source != "export":  # an exported program is frozen in the mode it was traced in
            model.eval()
        self.training = False

    def train(self, mode: bool = True) -> ContractModel:
        # Only the flag changes: the model from elsewhere stays in eval mode (see the module docstring).
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.contract.channels > 1:
            x = x.expand(-1, self.contract.channels, -1, -1)  # a no-op when x already has them
        if self.normalize is not None:
            x = self.normalize(x)
        if self.contract.source == "torchscript":
            # Plain op-by-op execution: the JIT's profiling executor differentiates a graph it profiled in
            # one precision and fails on the next (fp32 scoring, then bf16 attacks: "expected dtype
            # BFloat16 for gradOutput"). Eager autograd through the same ops has no such state.
            with torch.jit.optimized_execution(False):
                return self.model(x)
        if self.contract.batch is None:
            return self.model(x)
        return _fixed_batch(self.model, x, self.contract.batch)


def _fixed_batch(model: nn.Module, x: torch.Tensor, batch: int) -> torch.Tensor:
    """Run a program traced for exactly `batch` images on any number: chunks, the last one padded with
    copies of its final image (rows are independent in eval mode; the padding's outputs are dropped)."""
    outs = []
    for i in range(0, len(x), batch):
        chunk = x[i : i + batch]
        n = len(chunk)
        if n < batch:
            chunk = torch.cat([chunk, chunk[-1:].expand(batch - n, *chunk.shape[1:])])
        outs.append(model(chunk)[:n])
    return torch.cat(outs)


def parse_stats(mean: Sequence[float] | None, std: Sequence[float] | None, channels: int):
    """(mean, std) as float tuples of length 1 or `channels`, or (None, None); one-line errors."""
    if (mean is None) != (std is None):
        raise ConfigError("give both mean and std, or neither")
    if mean is None or std is None:
        return None, None
    mean_t, std_t = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    for name, values in (("mean", mean_t), ("std", std_t)):
        if len(values) not in (1, channels):
            raise ConfigError(f"{name} has {len(values)} values; the model takes {channels} channel(s)")
    if any(s <= 0 for s in std_t):
        raise ConfigError("std must be positive")
    return mean_t, std_t


def first_conv_channels(model: nn.Module) -> int | None:
    """Input channels of the first 2-D convolution of a plain module (None when it has none)."""
    if isinstance(model, torch.jit.ScriptModule):
        return None
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return None if conv is None else int(conv.in_channels)


def _forward(model: nn.Module, channels: int, size: int, batch: int | None) -> torch.Tensor:
    # On the model's own device: a notebook's model may already sit on the GPU.
    tensor = next(iter([*model.parameters(), *model.buffers()]), None)
    x = torch.zeros(batch or 2, channels, size, size, device=tensor.device if tensor is not None else "cpu")
    with torch.no_grad():
        return model(x)


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:160]}" if text else type(e).__name__


def probe(model: nn.Module, contract: InputContract, *, declared_channels: int | None) -> InputContract:
    """One forward pass on zeros: settles the channel count (declared, else 1 then 3) and measures the
    output width. Every failure is a one-line ConfigError naming both sides."""
    subject = model if contract.source == "export" else model.eval()  # an exported program cannot switch
    candidates = [declared_channels] if declared_channels else [contract.channels, 4 - contract.channels]
    failures = []
    for channels in candidates:
        try:
            out = _forward(subject, channels, contract.image_size, contract.batch)
        except Exception as e:  # noqa: BLE001 - a model from elsewhere may raise anything on bad input
            failures.append((channels, e))
            continue
        break
    else:
        channels, error = failures[0]
        if declared_channels:
            other = 4 - declared_channels
            try:
                _forward(subject, other, contract.image_size, contract.batch)
            except Exception:  # noqa: BLE001
                pass
            else:
                raise ConfigError(
                    f"{contract.model} takes {other}-channel input; channels was given as {declared_channels}"
                ) from error
        raise ConfigError(
            f"{contract.model} fails on {channels}x{contract.image_size}x{contract.image_size} input "
            f"({_first_line(error)})"
        ) from error
    if not isinstance(out, torch.Tensor):
        raise ConfigError(f"{contract.model} returns {type(out).__name__}, not a tensor of logits")
    if out.dim() != 2 or out.shape[1] < 2:
        raise ConfigError(
            f"{contract.model} outputs shape {tuple(out.shape)}; expected (batch, classes) logits"
        )
    return replace(contract, channels=channels, num_classes=int(out.shape[1]))


def check_num_classes(contract: InputContract, expected: int | None) -> None:
    if expected is not None and contract.num_classes != expected:
        raise ConfigError(
            f"{contract.model} outputs {contract.num_classes} classes; num_classes says {expected}"
        )


def wrap_module(
    model: nn.Module,
    *,
    channels: int | None = None,
    image_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    num_classes: int | None = None,
    source: str = "module",
    label: str | None = None,
    path: str | None = None,
    sha256: str | None = None,
    batch: int | None = None,
) -> ContractModel:
    """Put `model` (any nn.Module taking (N, C, H, W) images) behind a checked input contract.

    `channels` None: the first convolution's, else found by trying 1 then 3. `mean`/`std`: the
    normalization the model expects on [0, 1] pixels, applied inside the wrapper; None when the
    model takes [0, 1] pixels. `num_classes`: checked against the measured output width."""
    if isinstance(model, ContractModel):
        return model
    if channels is not None and channels not in (1, 3):
        raise ConfigError(f"channels must be 1 or 3, got {channels}")
    size = DEFAULT_IMAGE_SIZE if image_size is None else int(image_size)
    if size < 8:
        raise ConfigError(f"image size must be >= 8, got {size}")
    label = label or f"module:{type(model).__name__}"
    detected = first_conv_channels(model)
    if channels is not None and detected is not None and detected != channels:
        raise ConfigError(f"{label} takes {detected}-channel input; channels was given as {channels}")
    guess = channels or (detected if detected in (1, 3) else 1)
    contract = InputContract(
        source=source,
        model=label,
        channels=guess,
        image_size=size,
        num_classes=0,
        path=path,
        sha256=sha256,
        batch=batch,
    )
    contract = probe(
        model, contract, declared_channels=channels or (detected if detected in (1, 3) else None)
    )
    check_num_classes(contract, num_classes)
    m, s = parse_stats(mean, std, contract.channels)
    if m is not None:
        contract = replace(contract, normalization="wrapper", mean=m, std=s)
    return ContractModel(model, contract)
