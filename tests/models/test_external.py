"""Models from elsewhere: TorchScript, exported programs, torchvision/timm architectures + safetensors, any
nn.Module; the input contract, its one-line mismatch errors, and what is refused without being run."""

from __future__ import annotations

import json
import os
import sys
import warnings
import zipfile

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from fortify.errors import CheckpointError, ConfigError
from fortify.models import ContractModel, Normalize, build_model, load_external_model, wrap_module
from fortify.models.external import file_kind
from fortify.training.checkpoints import load_model, save_checkpoint


def tiny_cnn(in_channels: int = 1, num_classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(in_channels, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, num_classes),
    ).eval()


def save_torchscript(model: nn.Module, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in recent torch
        torch.jit.save(torch.jit.script(model), str(path))
    return path


def save_exported(model: nn.Module, path, batch: int = 4, size: int = 16, dynamic: bool = False):
    x = torch.rand(batch, model[0].in_channels, size, size)
    shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
    torch.export.save(torch.export.export(model, (x,), dynamic_shapes=shapes), str(path))
    return path


@pytest.fixture(scope="module")
def net():
    return tiny_cnn()


@pytest.fixture(scope="module")
def pt2_static(net, tmp_path_factory):
    return save_exported(net, tmp_path_factory.mktemp("pt2") / "static.pt2")


def _one_line(message: str) -> None:
    assert "\n" not in message and " object at 0x" not in message, message


def test_torchscript_without_a_size_is_refused_not_run_at_128(net, tmp_path):
    path = save_torchscript(net, tmp_path / "net.pt")
    with pytest.raises(ConfigError, match="does not record its input size; give it with --image-size") as e:
        load_external_model(path)
    _one_line(str(e.value))


def test_torchscript_size_recorded_in_the_archive_is_used(net, tmp_path):
    path = tmp_path / "net.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(net), str(path), _extra_files={"image_size": "24"})
    assert load_external_model(path).contract.image_size == 24
    with pytest.raises(ConfigError, match="records 24 px input; image size was given as 16"):
        load_external_model(path, image_size=16)


def test_torchscript_size_attribute_is_used(tmp_path):
    class Sized(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.image_size = 20
            self.net = tiny_cnn()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

    assert load_external_model(save_torchscript(Sized().eval(), tmp_path / "s.pt")).contract.image_size == 20


def test_torchscript_loads_behind_its_contract(net, tmp_path):
    model = load_external_model(save_torchscript(net, tmp_path / "net.pt"), image_size=16)
    c = model.contract
    assert (c.source, c.channels, c.image_size, c.num_classes, c.normalization) == (
        "torchscript",
        1,
        16,
        3,
        "inside",
    )
    assert len(c.sha256) == 64 and c.path.endswith("net.pt")
    x = torch.rand(5, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model(x), net(x), atol=1e-6)
    assert json.dumps(c.as_dict())  # recorded as plain JSON


@pytest.mark.parametrize("dynamic", [False, True])
def test_exported_program_any_batch_size(net, tmp_path, dynamic):
    path = save_exported(net, tmp_path / "net.pt2", batch=4, dynamic=dynamic)
    model = load_external_model(path)
    assert model.contract.image_size == 16  # fixed by the program, not guessed
    assert model.contract.batch == (None if dynamic else 4)
    x = torch.rand(7, 1, 16, 16, requires_grad=True)  # 7: one full chunk of 4 and a padded one
    out = model(x)
    assert torch.allclose(out, net(x), atol=1e-5)
    out.sum().backward()  # attacks need input gradients through the program
    assert x.grad is not None and x.grad.abs().sum() > 0
    model.train()  # an exported program cannot switch modes; the wrapper must not try
    assert torch.allclose(model(x), out, atol=1e-6)


def test_mean_std_applied_inside_so_attacks_see_pixels():
    rgb = tiny_cnn(in_channels=3)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    model = wrap_module(rgb, image_size=16, mean=mean, std=std)
    assert model.contract.channels == 3 and model.contract.normalization == "wrapper"
    x = torch.rand(2, 1, 16, 16)  # fortify's gray [0, 1] pixels
    expected = rgb(
        (x.repeat(1, 3, 1, 1) - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    )
    with torch.no_grad():
        assert torch.allclose(model(x), expected, atol=1e-5)
    assert model.contract.as_dict()["gray_to_channels"] == "repeat"


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(channels=3), "takes 1-channel input; channels was given as 3"),
        (dict(num_classes=4), "outputs 3 classes; num_classes says 4"),
        (dict(mean=[0.5], std=None), "both mean and std"),
        (dict(mean=[0.5, 0.5], std=[0.2, 0.2]), "mean has 2 values; the model takes 1"),
    ],
)
def test_contract_mismatches_are_one_line_errors(net, tmp_path, kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment) as e:
        wrap_module(net, image_size=16, **kwargs)
    _one_line(str(e.value))
    ts = save_torchscript(net, tmp_path / "net.pt")  # no convolution to inspect: found by a forward pass
    if "channels" in kwargs or "num_classes" in kwargs:
        with pytest.raises(ConfigError, match=fragment):
            load_external_model(ts, image_size=16, **kwargs)


def test_channel_count_found_without_being_told(tmp_path):
    rgb = save_torchscript(tiny_cnn(in_channels=3), tmp_path / "rgb.pt")
    assert load_external_model(rgb, image_size=16).contract.channels == 3
    with pytest.raises(ConfigError, match="rgb.pt takes 3-channel input; channels was given as 1"):
        load_external_model(rgb, image_size=16, channels=1)


def test_exported_program_fixes_its_input(pt2_static):
    with pytest.raises(ConfigError, match="exported for 16 px input; image size was given as 32"):
        load_external_model(pt2_static, image_size=32)
    with pytest.raises(ConfigError, match="takes 1-channel input; channels was given as 3"):
        load_external_model(pt2_static, channels=3)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("new_zip", [True, False])
def test_pickles_are_refused_and_never_run(tmp_path, new_zip):
    marker = tmp_path / "pwned"
    evil = tmp_path / "model.pt"
    torch.save({"net": _RunsCode(marker)}, evil, _use_new_zipfile_serialization=new_zip)
    with pytest.raises(CheckpointError, match="fortify does not unpickle") as e:
        load_external_model(evil)
    _one_line(str(e.value))
    assert not marker.exists()


def _rewrite(src, dst, *, edit=None, add=None):
    """Copy a .pt2 zip, replacing entries (by path inside the root folder) or adding new ones."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        root = zin.namelist()[0].split("/", 1)[0]
        for item in zin.infolist():
            data = zin.read(item)
            rel = item.filename.split("/", 1)[1]
            if edit and rel in edit:
                data = edit[rel](data)
            zout.writestr(item, data)
        for rel, data in (add or {}).items():
            zout.writestr(f"{root}/{rel}", data)
    return dst


def _retarget(data: bytes) -> bytes:
    program = json.loads(data)
    program["graph_module"]["graph"]["nodes"][0]["target"] = "torch.os.system"
    return json.dumps(program).encode()


def _shape_code(data: bytes) -> bytes:
    program = json.loads(data)
    program["range_constraints"] = {"__import__('os').system('true')": {"min_val": 0, "max_val": None}}
    return json.dumps(program).encode()


def _pickled_weight(data: bytes) -> bytes:
    config = json.loads(data)
    next(iter(config["config"].values()))["use_pickle"] = True
    return json.dumps(config).encode()


@pytest.mark.parametrize(
    "tamper, fragment",
    [
        (dict(edit={"models/model.json": _retarget}), "calls 'torch.os.system'"),
        (dict(edit={"models/model.json": _shape_code}), "shape expression"),
        (dict(edit={"data/weights/model_weights_config.json": _pickled_weight}), "stored as a pickle"),
        (dict(add={"data/constants/opaque_obj_0": b"\x80\x04N."}), "opaque_obj_0"),
        (dict(add={"data/aotinductor/model/model.so": b"\x7fELF"}), "aotinductor"),
    ],
)
def test_unsafe_exported_programs_are_refused_before_torch_reads_them(
    pt2_static, tmp_path, monkeypatch, tamper, fragment
):
    bad = _rewrite(pt2_static, tmp_path / "bad.pt2", **tamper)

    def never(*args, **kwargs):
        raise AssertionError("torch.export.load reached")

    monkeypatch.setattr(torch.export, "load", never)
    with pytest.raises(CheckpointError, match="refused exported program") as e:
        load_external_model(bad)
    assert fragment in str(e.value)
    _one_line(str(e.value))


def test_file_kind_is_read_from_bytes_not_names(net, tmp_path):
    assert file_kind(save_torchscript(net, tmp_path / "model.pt2")) == "torchscript"
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError, match="not a TorchScript archive"):
        load_external_model(tmp_path / "text.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_external_model(tmp_path / "missing.pt")


def _rgb_resnet_weights(tmp_path, num_classes=3):
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None, num_classes=num_classes).eval()
    path = tmp_path / "rn18.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    return reference, path


def test_torchvision_architecture_with_safetensors(tmp_path):
    reference, path = _rgb_resnet_weights(tmp_path)
    model = load_external_model(arch="tv:resnet18", weights=path, num_classes=3, image_size=32)
    assert isinstance(model, ContractModel)
    assert (model.contract.source, model.contract.model, model.contract.channels) == (
        "torchvision",
        "torchvision:resnet18",
        3,
    )
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x.repeat(1, 3, 1, 1)), atol=1e-5)
    with pytest.raises(
        CheckpointError, match=r"'fc.weight' is \(3, 512\) in the file, \(4, 512\) in the model"
    ):
        load_external_model(arch="tv:resnet18", weights=path, num_classes=4)
    with pytest.raises(CheckpointError, match="weights do not fit torchvision:squeezenet1_1"):
        load_external_model(arch="squeezenet1_1", weights=path, num_classes=3)
    with pytest.raises(ConfigError, match="unknown torchvision model 'resnet19'"):
        load_external_model(arch="tv:resnet19", weights=path, num_classes=3)
    with pytest.raises(ConfigError, match="torchvision models take 3-channel input; channels was given as 1"):
        load_external_model(arch="tv:resnet18", weights=path, num_classes=3, channels=1)


def test_timm_architecture_and_registry(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    gray = timm.create_model("test_resnet", pretrained=False, num_classes=3, in_chans=1).eval()
    path = tmp_path / "timm.safetensors"
    save_file({k: v.contiguous() for k, v in gray.state_dict().items()}, str(path))
    model = load_external_model(arch="timm:test_resnet", weights=path, num_classes=3, image_size=32)
    assert model.contract.channels == 1  # read from the weights' first convolution
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), gray(x), atol=1e-5)
    trainable = build_model("timm:test_resnet", 3)  # fortify's conventions: 1 channel, Normalize first
    assert isinstance(trainable[0], Normalize) and trainable.normalize.mean.flatten().tolist() == [0.5]
    assert trainable.eval()(x).shape == (2, 3)
    info = {
        "model": "timm:test_resnet",
        "num_classes": 3,
        "in_channels": 1,
        "image_size": 32,
        "classes": list("abc"),
    }
    save_checkpoint(tmp_path / "best", trainable, info)  # a fortify checkpoint rebuilds it by name
    again, _ = load_model(tmp_path / "best.safetensors")
    with torch.no_grad():
        assert torch.equal(again(x), trainable(x))
    with pytest.raises(ConfigError, match="unknown timm model 'no_such_net'"):
        build_model("timm:no_such_net", 3)


def test_timm_missing_is_one_line_install_hint(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError
    with pytest.raises(ConfigError, match=r"timm is not installed: pip install fortify\[timm\]"):
        build_model("timm:test_resnet", 3)
    _, path = _rgb_resnet_weights(tmp_path)
    with pytest.raises(ConfigError, match="timm is not installed"):
        load_external_model(arch="timm:test_resnet", weights=path, num_classes=3)
