"""Model registry, normalization layer, grayscale folding and offline weights."""

from __future__ import annotations

import os

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from fortify.errors import CheckpointError, ConfigError
from fortify.models import Normalize, build_model, list_models
from fortify.models.normalize import IMAGENET_MEAN, IMAGENET_STD


def test_registry_names_and_shapes():
    assert list_models() == ["resnet18", "resnet34", "resnet50", "smallcnn"]
    x = torch.rand(2, 1, 32, 32)
    for name in list_models():
        model = build_model(name, 3).eval()
        assert isinstance(model[0], Normalize), name
        with torch.no_grad():
            assert model(x).shape == (2, 3), name


def test_three_channel_and_other_class_counts():
    model = build_model("resnet18", 5, in_channels=3).eval()
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 5)
    assert model.net.conv1.in_channels == 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(name="vgg16", num_classes=3), "unknown model"),
        (dict(name="resnet18", num_classes=1), "num_classes"),
        (dict(name="smallcnn", num_classes=3, pretrained=True), "no ImageNet weights"),
    ],
)
def test_bad_model_requests(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        build_model(**kwargs)


def test_normalize_is_pixel_space_affine():
    norm = Normalize([0.5], [0.25])
    x = torch.tensor([0.0, 0.5, 1.0]).view(1, 1, 1, 3)
    assert torch.allclose(norm(x), torch.tensor([-2.0, 0.0, 2.0]).view(1, 1, 1, 3))
    assert set(norm.state_dict()) == {"mean", "std"}  # buffers travel with checkpoints
    with pytest.raises(ValueError):
        Normalize([0.5], [0.0])


def test_scratch_gray_model_uses_ct_statistics():
    model = build_model("resnet18", 3)
    assert model.normalize.mean.flatten().tolist() == [0.5]
    assert model.normalize.std.flatten().tolist() == [0.25]


def _torchvision_weights(tmp_path, fmt: str):
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None).eval()  # 1000-way fc, RGB conv1
    path = tmp_path / f"rn18.{fmt}"
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    else:
        torch.save(reference.state_dict(), path)
    return reference, path


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_weights_file_folds_rgb_conv_by_summing(tmp_path, fmt):
    reference, path = _torchvision_weights(tmp_path, fmt)
    model = build_model("resnet18", 3, weights_file=path).eval()
    ref_state = reference.state_dict()
    assert torch.equal(model.net.conv1.weight, ref_state["conv1.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(model.net.layer3[0].conv2.weight, ref_state["layer3.0.conv2.weight"])
    assert model.net.fc.out_features == 3  # the ImageNet head is dropped, ours kept
    # ImageNet statistics, averaged over RGB for the single gray channel.
    assert model.normalize.mean.item() == pytest.approx(sum(IMAGENET_MEAN) / 3)
    assert model.normalize.std.item() == pytest.approx(sum(IMAGENET_STD) / 3)


def test_folded_stem_matches_rgb_network_on_gray_images(tmp_path):
    reference, path = _torchvision_weights(tmp_path, "pth")
    model = build_model("resnet18", 3, weights_file=path).eval()
    gray = torch.rand(4, 1, 32, 32)
    rgb = gray.repeat(1, 3, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        ours = model.net.bn1(model.net.conv1(model.normalize(gray)))[..., 2:-2, 2:-2]
        theirs = reference.bn1(reference.conv1((rgb - mean) / std))[..., 2:-2, 2:-2]  # interior: no padding
        # A stem that averages instead of summing the RGB weights is off by a factor of ~3.
        wrong = reference.bn1(
            torch.nn.functional.conv2d(model.normalize(gray), model.net.conv1.weight / 3, stride=2, padding=3)
        )[..., 2:-2, 2:-2]
    rel = (ours - theirs).norm() / theirs.norm()
    assert rel < 0.05, f"folded stem differs by {rel:.3%} from the RGB stem"
    assert (wrong - theirs).norm() / theirs.norm() > 0.3


def test_weights_file_problems_are_one_line_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        build_model("resnet18", 3, weights_file=tmp_path / "missing.pth")
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match="do not fit"):
        build_model("resnet18", 3, weights_file=tmp_path / "partial.pth")
    resnet34 = torchvision.models.resnet34(weights=None)
    torch.save(resnet34.state_dict(), tmp_path / "rn34.pth")
    with pytest.raises(CheckpointError, match="do not fit"):
        build_model("resnet18", 3, weights_file=tmp_path / "rn34.pth")


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_weights_file_pickle_with_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"conv1.weight": _RunsCode(marker)}, evil)
    with pytest.raises(CheckpointError, match="cannot read"):
        build_model("resnet18", 3, weights_file=evil)
    assert not marker.exists()


def test_pretrained_without_internet_is_one_line_error(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(torchvision.models, "get_weight", offline)
    with pytest.raises(CheckpointError, match="--weights FILE"):
        build_model("resnet50", 3, pretrained=True)
