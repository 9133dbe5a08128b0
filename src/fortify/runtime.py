"""Device, precision and seeding, decided once and passed down.

`Runtime.resolve("auto", "auto")` picks CUDA if present, then Apple MPS, then the CPU, and bf16
autocast where the hardware runs it natively (CUDA with bf16 support, or a CPU with AVX-512 BF16 /
AMX). Library code receives a `Runtime` (or its fields) instead of re-detecting in every function.
"""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fortify.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16")


def _cpu_flags() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) that stop short of its AVX-512 BF16 kernels.
_ONEDNN_ISAS_WITHOUT_BF16 = frozenset(
    {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}
)


def kernels_capped() -> bool:
    """True when PyTorch was told to use narrower kernels than the CPU has (ATEN_CPU_CAPABILITY=avx2,
    ONEDNN_MAX_CPU_ISA=AVX2): bf16 then runs emulated, as on a CPU without it. The caps are also how
    this machine stands in for an AVX2-only one (see the README's Performance section)."""
    aten = torch.backends.cpu.get_cpu_capability().upper()  # "AVX512", "AVX2", "DEFAULT", ...
    onednn = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "")).strip().upper()
    return not aten.startswith("AVX512") or onednn in _ONEDNN_ISAS_WITHOUT_BF16


def _has_bf16_instructions(flags: str) -> bool:
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_has_native_bf16() -> bool:
    """True when this CPU has AVX-512 BF16 or AMX-BF16 instructions (Linux /proc/cpuinfo) and PyTorch
    is allowed to use them (`kernels_capped`)."""
    return _has_bf16_instructions(_cpu_flags()) and not kernels_capped()


def cpu_kind() -> str:
    """The CPU kind a timing is reported against: "avx512_bf16" (or AMX: bf16 is native), "avx2"
    (fp32 only; bf16 is emulated), else "other". A bf16 CPU whose kernels are capped at AVX2 is
    "avx2 (capped)": AVX2 code, but not an AVX2-only CPU's clocks and caches."""
    flags = _cpu_flags()
    if _has_bf16_instructions(flags):
        return "avx2 (capped)" if kernels_capped() else "avx512_bf16"
    return "avx2" if "avx2" in flags else "other"


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    precision: str  # "fp32" or "bf16" (resolved, never "auto")
    channels_last: bool = True

    @classmethod
    def resolve(cls, device: str = "auto", precision: str = "auto", channels_last: bool = True) -> Runtime:
        if device == "auto":
            dev = torch.device("cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu")
        else:
            try:
                dev = torch.device(device)
            except RuntimeError as e:
                raise ConfigError(f"unknown device {device!r}") from e
            if dev.type == "cuda" and not torch.cuda.is_available():
                raise ConfigError("device 'cuda' requested but CUDA is not available")
            if dev.type == "mps" and not _mps_available():
                raise ConfigError("device 'mps' requested but Apple MPS is not available")
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        if precision == "auto":
            if dev.type == "cuda":
                precision = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
            elif dev.type == "mps":
                precision = "fp32"  # bf16 autocast on MPS depends on the macOS version: not by default
            else:
                precision = "bf16" if cpu_has_native_bf16() else "fp32"
        return cls(device=dev, precision=precision, channels_last=channels_last)

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return torch.bfloat16 if self.precision == "bf16" else None

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast context for forward passes (a no-op in fp32)."""
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def describe(self) -> dict[str, str | bool]:
        return {"device": str(self.device), "precision": self.precision, "channels_last": self.channels_last}


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a CPU generator for explicit use."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
