"""Device and precision choice, including the CUDA and MPS paths on a machine that has neither."""

from __future__ import annotations

import warnings

import pytest
import torch

from fortify.errors import ConfigError
from fortify.runtime import Runtime


@pytest.fixture
def fake_cuda(monkeypatch):
    def install(bf16: bool) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)

    return install


@pytest.mark.parametrize("bf16, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_picks_cuda_and_its_bf16_support(fake_cuda, bf16, expected):
    fake_cuda(bf16)
    rt = Runtime.resolve("auto", "auto")
    assert rt.device.type == "cuda" and rt.precision == expected
    assert rt.amp_dtype == (torch.bfloat16 if bf16 else None)
    if bf16:
        with warnings.catch_warnings():  # a CPU-only torch warns that it will not autocast on CUDA
            warnings.simplefilter("ignore")
            ctx = rt.autocast()
        assert isinstance(ctx, torch.autocast) and ctx.device == "cuda" and ctx.fast_dtype == torch.bfloat16


def test_auto_picks_mps_in_fp32_when_there_is_no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    rt = Runtime.resolve("auto", "auto")
    assert rt.device.type == "mps" and rt.precision == "fp32"


def test_cpu_when_nothing_else(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert Runtime.resolve("auto", "fp32").device.type == "cpu"


@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_asking_for_an_absent_accelerator_is_a_one_line_error(monkeypatch, device):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=f"'{device}' requested"):
        Runtime.resolve(device, "auto")


def test_cpu_batches_go_channels_last_and_stay_on_the_cpu():
    rt = Runtime.resolve("cpu", "fp32")
    x = rt.to_device(torch.rand(2, 1, 8, 8))
    assert x.device.type == "cpu" and x.is_contiguous(memory_format=torch.channels_last)
    assert Runtime.resolve("cpu", "bf16").autocast().fast_dtype == torch.bfloat16


@pytest.mark.parametrize(
    "flags, kind",
    [
        ("fpu avx2 avx512f avx512_bf16", "avx512_bf16"),
        ("fpu avx2 amx_bf16", "avx512_bf16"),
        ("fpu sse4_2 avx2", "avx2"),
        ("fpu neon", "other"),
    ],
)
def test_cpu_kind_names_what_decides_bf16_speed(monkeypatch, flags, kind):
    import fortify.runtime as runtime_module

    monkeypatch.setattr(runtime_module, "_cpu_flags", lambda: flags)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    assert runtime_module.cpu_kind() == kind
    assert runtime_module.cpu_has_native_bf16() == (kind == "avx512_bf16")


@pytest.mark.parametrize(
    "aten, onednn, native",
    [
        ("AVX512", "", True),
        ("AVX512", "ALL", True),
        ("AVX512", "AVX512_CORE_BF16", True),
        ("AVX2", "", False),  # ATEN_CPU_CAPABILITY=avx2
        ("AVX512", "AVX2", False),  # ONEDNN_MAX_CPU_ISA=AVX2: its convolutions lose bf16
        ("AVX512", "avx512_core", False),
    ],
)
def test_kernel_caps_turn_native_bf16_off(monkeypatch, aten, onednn, native):
    """With kernels capped below AVX-512 BF16, bf16 is emulated (~13x slower): auto must pick fp32."""
    import fortify.runtime as runtime_module

    monkeypatch.setattr(runtime_module, "_cpu_flags", lambda: "fpu avx2 avx512f avx512_bf16")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: aten)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", onednn)
    assert runtime_module.cpu_has_native_bf16() is native
    assert runtime_module.cpu_kind() == ("avx512_bf16" if native else "avx2 (capped)")
    assert Runtime.resolve("cpu", "auto").precision == ("bf16" if native else "fp32")
