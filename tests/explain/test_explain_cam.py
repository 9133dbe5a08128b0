"""CAMs through the grad-cam package: shape, range, dependence on the input, fp32, every registry model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fortify.errors import ConfigError
from fortify.explain.cam import (
    METHODS,
    MIN_GRID,
    TARGET_LAYERS,
    check_method,
    class_activation_maps,
    target_layer,
)
from fortify.models import build_model, list_models
from fortify.report.figures.explain import overlay


def _inputs(n: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, size, size, generator=g)


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name, 3).eval()


@pytest.mark.parametrize("name", ["smallcnn", pytest.param("resnet18", marks=pytest.mark.slow)])
def test_maps_have_the_input_size_are_in_range_and_follow_the_input(name):
    model = _model(name)
    layer = target_layer(model, name, 32)
    x = _inputs()
    targets = torch.tensor([0, 1, 2])
    maps = class_activation_maps(model, x, targets, layer=layer, method="gradcam++")
    assert maps.shape == (3, 32, 32)
    assert maps.dtype == np.float32 and np.isfinite(maps).all()
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    assert all(np.ptp(m) > 0 for m in maps), "a map that is constant says nothing"
    # Another image gives another map; the same image and class give the same map again.
    other = class_activation_maps(model, _inputs(seed=1), targets, layer=layer, method="gradcam++")
    assert np.abs(other - maps).max() > 0.05
    again = class_activation_maps(model, x, targets, layer=layer, method="gradcam++")
    np.testing.assert_allclose(again, maps, atol=1e-6)


def test_target_class_changes_the_gradient_map():
    model = _model("smallcnn")
    layer = target_layer(model, "smallcnn", 32)
    x = _inputs(1).repeat(2, 1, 1, 1)
    maps = class_activation_maps(model, x, torch.tensor([0, 2]), layer=layer, method="layercam")
    assert np.abs(maps[0] - maps[1]).max() > 0.01


def test_every_method_name_runs_and_a_bad_name_is_one_line():
    model = _model("smallcnn")
    layer = target_layer(model, "smallcnn", 32)
    for method in METHODS:
        maps = class_activation_maps(model, _inputs(2), torch.tensor([0, 1]), layer=layer, method=method)
        assert maps.shape == (2, 32, 32), method
    with pytest.raises(ConfigError) as e:
        check_method("gradcam+++")
    msg = str(e.value)
    assert "\n" not in msg and all(m in msg for m in METHODS)


def test_maps_are_fp32_under_a_bf16_autocast_and_leave_the_model_untouched():
    model = _model("smallcnn")
    layer = target_layer(model, "smallcnn", 32)
    x, t = _inputs(2), torch.tensor([1, 2])
    ref = class_activation_maps(model, x, t, layer=layer)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = class_activation_maps(model, x, t, layer=layer)
    # Under bf16 the package would not even run (it cannot turn bf16 activations into numpy).
    np.testing.assert_allclose(inside, ref, atol=1e-5)
    assert model.training, "train/eval mode is restored"
    assert all(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters()), "no parameter gradients computed"


def test_target_layer_table_covers_every_registry_model():
    for name in list_models():
        assert name in TARGET_LAYERS, f"{name} has no CAM target layer"
        model = build_model(name, 3)
        for size in (32, 128):
            layer = target_layer(model, name, size)
            assert dict(model.named_modules())[layer.name] is layer.module
            assert min(layer.grid) >= MIN_GRID, (name, size, layer)
    # ResNets are explained at the last block of layer4 when it is big enough (128 px: 4x4).
    assert target_layer(build_model("resnet18", 3), "resnet18", 128).name == "net.layer4.1"
    with pytest.raises(ConfigError, match="no CAM target layer for architecture 'vit'"):
        target_layer(_model("smallcnn"), "vit", 32)


def test_overlay_turns_a_gray_scan_into_rgb():
    gray = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    cam = np.zeros((32, 32), dtype=np.float32)
    cam[:8, :8] = 1.0
    rgb = overlay(gray, cam)
    assert rgb.shape == (32, 32, 3) and rgb.dtype == np.uint8
    assert not np.array_equal(rgb[0, 0], rgb[-1, -1])
