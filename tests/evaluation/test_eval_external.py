"""`fortify.evaluate` / `evaluate_checkpoint` on models from elsewhere: the same numbers as calling the
model directly, the same results structure as a fortify checkpoint, one-line mismatch errors."""

from __future__ import annotations

import warnings

import pytest
import torch
import torchvision
from fortify_eval_fixtures import IMAGE_SIZE, PHANTOM, eval_settings
from safetensors.torch import save_file

import fortify
from fortify.data import load_split, make_split
from fortify.errors import ConfigError
from fortify.evaluation import evaluate_checkpoint
from fortify.models import load_external_model
from fortify.runtime import Runtime
from fortify.training.checkpoints import load_model

CHEAP = dict(
    settings=eval_settings(
        attacks=["fgsm:eps=8/255"],
        eps=8 / 255,
        eps_curve=(0.0, 8 / 255),
        curve_attacks=("pgd:steps=2",),
        batch_size=32,
        examples_per_class=0,
        sanity_steps_factor=1,
        sanity_restarts=1,
    ),
    progress=False,
    runtime=Runtime.resolve("cpu", "fp32"),
)


@pytest.fixture(scope="module")
def test_set():
    manifest = make_split(PHANTOM, seed=0, image_size=IMAGE_SIZE)  # what evaluation makes without a manifest
    return load_split(manifest, PHANTOM, image_size=IMAGE_SIZE)["test"].tensors()


@pytest.fixture(scope="module")
def trained(tiny_checkpoint):
    return load_model(tiny_checkpoint)[0].eval()  # a plain nn.Module, trained well above chance


def _direct(model, x, y, channels=1) -> torch.Tensor:
    with torch.no_grad():
        return (model(x.repeat(1, channels, 1, 1)).argmax(1) == y).int()


def test_torchscript_and_exported_program_score_as_called_directly(trained, test_set, tmp_path):
    x, y = test_set
    direct = _direct(trained, x, y)
    assert direct.float().mean() > 0.5  # a model with something to lose
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(trained), str(tmp_path / "net.pt"))
    program = torch.export.export(trained, (x[:5],))  # static batch of 5: the test split has 12 images
    torch.export.save(program, str(tmp_path / "net.pt2"))
    for name, source in (("net.pt", "torchscript"), ("net.pt2", "export")):
        results = fortify.evaluate(tmp_path / name, PHANTOM, image_size=IMAGE_SIZE, **CHEAP)
        assert results["per_sample"]["correct"]["clean"] == direct.tolist(), name
        assert results["clean"]["accuracy"] == pytest.approx(direct.float().mean().item())
        contract = results["checkpoint"]["input_contract"]
        assert (contract["source"], contract["channels"], contract["image_size"]) == (source, 1, IMAGE_SIZE)
        assert results["checkpoint"]["sha256"] == contract["sha256"] and len(contract["sha256"]) == 64
        assert results["runtime"]["batchnorm_folded"] is False  # fx cannot trace these: attacked as they are
        assert results["attacks"]["fgsm"]["accuracy"] <= results["clean"]["accuracy"]


def test_three_channel_torchvision_model_through_evaluate(test_set, tmp_path):
    x, y = test_set
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None, num_classes=3).eval()
    weights = tmp_path / "rn18.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(weights))
    model = load_external_model(arch="tv:resnet18", weights=weights, num_classes=3, image_size=IMAGE_SIZE)
    results = evaluate_checkpoint(model, data=PHANTOM, out_dir=tmp_path / "eval", **CHEAP)
    direct = _direct(reference, x, y, channels=3)
    assert results["per_sample"]["correct"]["clean"] == direct.tolist()
    contract = results["checkpoint"]["input_contract"]
    assert (contract["channels"], contract["gray_to_channels"], contract["model"]) == (
        3,
        "repeat",
        "torchvision:resnet18",
    )
    assert (tmp_path / "eval" / "results.json").is_file()


def test_any_module_gives_the_structure_of_a_checkpoint_evaluation(trained, tiny_checkpoint):
    ours = fortify.evaluate(trained, PHANTOM, image_size=IMAGE_SIZE, **CHEAP)
    theirs = evaluate_checkpoint(tiny_checkpoint, data=PHANTOM, **CHEAP)
    assert set(ours) == set(theirs)
    assert set(ours["checkpoint"]) == set(theirs["checkpoint"])
    assert ours["clean"]["accuracy"] == theirs["clean"]["accuracy"]  # same model, same test split
    assert theirs["checkpoint"]["input_contract"]["source"] == "fortify"
    assert ours["checkpoint"]["input_contract"]["source"] == "module"


def test_class_count_mismatch_is_one_line_and_writes_nothing(tmp_path):
    four = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(IMAGE_SIZE * IMAGE_SIZE, 4))
    out = tmp_path / "eval"
    with pytest.raises(ConfigError) as e:
        fortify.evaluate(four, PHANTOM, image_size=IMAGE_SIZE, out_dir=out, **CHEAP)
    assert (
        str(e.value) == "module:Sequential outputs 4 classes; the dataset has 3 (benign, malignant, normal)"
    )
    assert not out.exists()


def test_torchscript_attacked_in_bf16_after_fp32_scoring(trained, test_set, tmp_path):
    # The JIT's profiling executor once differentiated a graph profiled in fp32 and failed under bf16.
    x, y = test_set
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(trained), str(tmp_path / "net.pt"))
    bf16 = {**CHEAP, "runtime": Runtime.resolve("cpu", "bf16")}
    results = fortify.evaluate(tmp_path / "net.pt", PHANTOM, image_size=IMAGE_SIZE, **bf16)
    assert results["runtime"]["precision"] == "bf16" and results["runtime"]["score_precision"] == "fp32"
    assert results["per_sample"]["correct"]["clean"] == _direct(trained, x, y).tolist()
