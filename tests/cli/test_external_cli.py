"""`fortify evaluate` / `attack` with models from elsewhere: --checkpoint FILE.pt2/.pt (TorchScript), or
--arch with --weights; every mismatch a one-line error that leaves nothing behind."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluation"))
from fortify_eval_fixtures import IMAGE_SIZE, PHANTOM  # noqa: E402

from fortify.cli import main  # noqa: E402
from fortify.fileio import read_json  # noqa: E402

CHEAP = [
    "--attacks",
    "fgsm:eps=8/255",
    "--eps-curve",
    "0",
    "--curve-attack",
    "pgd:steps=2",
    "--precision",
    "fp32",
    "--device",
    "cpu",
    "--limit",
    "6",
]


def _cnn(num_classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, num_classes),
    ).eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("external")
    x = torch.rand(2, 1, IMAGE_SIZE, IMAGE_SIZE)
    torch.export.save(torch.export.export(_cnn(), (x,)), str(folder / "net.pt2"))
    torch.export.save(torch.export.export(_cnn(4), (x,)), str(folder / "four.pt2"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(_cnn()), str(folder / "net.pt"))
    torch.save(_cnn().state_dict(), folder / "state.pt")  # a pickle: must be refused, never loaded
    return folder


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def _one_line_error(code: int, err: str) -> str:
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fortify: error: "), err
    return lines[0]


def test_evaluate_an_exported_program(files, tmp_path, capsys):
    out = tmp_path / "eval"
    argv = ["evaluate", "--checkpoint", str(files / "net.pt2"), "--data", PHANTOM, "--out", str(out), *CHEAP]
    code, stdout, err = run(argv, capsys)
    assert code == 0, err
    contract = read_json(out / "results.json")["checkpoint"]["input_contract"]
    assert (contract["source"], contract["image_size"], contract["num_classes"]) == ("export", IMAGE_SIZE, 3)
    assert "export:net.pt2 (external)" in stdout


def test_evaluate_a_torchscript_model(files, tmp_path, capsys):
    # fortify evaluate times this machine for its estimate: that must work on a TorchScript archive too
    # (its parameters cannot be optimized, and torch.fx cannot fold its batch norm).
    out = tmp_path / "eval"
    argv = [
        "evaluate",
        "--checkpoint",
        str(files / "net.pt"),
        "--image-size",
        str(IMAGE_SIZE),
        "--data",
        PHANTOM,
    ]
    code, stdout, err = run([*argv, "--out", str(out), *CHEAP], capsys)
    assert code == 0, err
    assert "estimated time: about" in err
    assert read_json(out / "results.json")["checkpoint"]["input_contract"]["source"] == "torchscript"


def test_attack_a_torchscript_model(files, tmp_path, capsys):
    out = tmp_path / "adv"
    argv = ["attack", "--checkpoint", str(files / "net.pt"), "--data", PHANTOM, "--attack", "fgsm:eps=8/255"]
    code, _, err = run([*argv, "--out", str(out), "--image-size", str(IMAGE_SIZE), "--limit", "3"], capsys)
    assert code == 0, err
    summary = read_json(out / "attacks.json")
    assert summary["input_contract"]["source"] == "torchscript" and len(summary["images"]) == 3


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--checkpoint", "state.pt"], "fortify does not unpickle"),
        (["--checkpoint", "four.pt2"], "outputs 4 classes; the dataset has 3 (benign, malignant, normal)"),
        (
            ["--checkpoint", "net.pt", "--channels", "3", "--image-size", "32"],
            "takes 1-channel input; channels was given as 3",
        ),
        (["--checkpoint", "net.pt"], "net.pt does not record its input size; give it with --image-size N"),
        (
            ["--checkpoint", "net.pt2", "--image-size", "64"],
            "exported for 32 px input; image size was given as 64",
        ),
        (["--arch", "tv:resnet18", "--weights", "state.pt"], "--arch needs --num-classes"),
        (["--arch", "tv:resnet18", "--weights", "state.pt", "--num-classes", "3"], "does not unpickle"),
        (["--checkpoint", "net.pt", "--arch", "tv:resnet18"], "not both"),
        (["--checkpoint", "net.pt", "--mean", "0.5,x", "--std", "0.2"], "not a comma-separated list"),
        (["--checkpoint", "best.safetensors", "--channels", "3"], "--channels is for models from elsewhere"),
    ],
)
def test_bad_models_are_one_line_errors_that_write_nothing(files, tmp_path, capsys, args, fragment):
    args = [str(files / a) if (files / a).is_file() or a.endswith(".safetensors") else a for a in args]
    out = tmp_path / "out"
    code, _, err = run(["evaluate", *args, "--data", PHANTOM, "--out", str(out), *CHEAP], capsys)
    assert fragment in _one_line_error(code, err)
    assert not out.exists()
