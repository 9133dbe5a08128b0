"""`fortify operating-point` through the real CLI entry point, and the checkpoints it writes."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluation"))
from fortify_eval_fixtures import PHANTOM, tiny_checkpoint_path  # noqa: E402

from fortify.cli import main  # noqa: E402
from fortify.errors import CheckpointError  # noqa: E402
from fortify.evaluation.loading import checkpoint_record, open_test_set  # noqa: E402
from fortify.fileio import read_json, write_json  # noqa: E402
from fortify.models import ClassBias  # noqa: E402
from fortify.training.checkpoints import load_model  # noqa: E402


def _with_offsets(factory, bias: list[float]) -> Path:
    """A copy of the tiny phantom model whose JSON adds `bias` to its logits."""
    src = tiny_checkpoint_path(factory)
    dst = factory.mktemp("offsets") / "model.safetensors"
    shutil.copy(src, dst)
    write_json(dst.with_suffix(".json"), read_json(src.with_suffix(".json")) | {"class_bias": bias})
    return dst


@pytest.fixture(scope="module")
def handicapped(tmp_path_factory) -> Path:
    """The benign logit pushed down by 6: benign is (almost) never predicted, within the search's reach."""
    return _with_offsets(tmp_path_factory, [-6.0, 0.0, 0.0])


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def test_loaded_model_carries_the_offsets_of_its_json(handicapped, tmp_path_factory):
    plain, _ = load_model(tiny_checkpoint_path(tmp_path_factory))
    biased, info = load_model(handicapped)
    x = torch.rand(4, 1, 32, 32)
    assert torch.allclose(biased(x), plain(x) + torch.tensor([-6.0, 0.0, 0.0]), atol=1e-6)
    assert checkpoint_record(handicapped, info)["class_bias"] == [-6.0, 0.0, 0.0]  # results.json says so


@pytest.mark.parametrize("bias", [[1.0, 0.0], "high", [float("nan"), 0.0, 0.0]])
def test_unusable_offsets_in_a_json_are_refused(handicapped, tmp_path, bias):
    dst = tmp_path / "m.safetensors"
    shutil.copy(handicapped, dst)
    write_json(dst.with_suffix(".json"), read_json(handicapped.with_suffix(".json")) | {"class_bias": bias})
    with pytest.raises(CheckpointError, match="class_bias"):
        load_model(dst)


def test_operating_point_undoes_a_handicap_on_validation_only(handicapped, tmp_path, capsys):
    out = tmp_path / "op" / "model.safetensors"
    code, stdout, err = run(
        ["operating-point", "--checkpoint", str(handicapped), "--data", PHANTOM, "--out", str(out)], capsys
    )
    assert code == 0, err
    info = read_json(out.with_suffix(".json"))
    point = info["operating_point"]
    assert point["chosen_on"]["split"] == "val" and point["chosen_on"]["manifest_sha256"]
    assert point["before"]["per_class"]["benign"]["sensitivity"] == 0.0
    assert point["after"]["balanced_accuracy"] > point["before"]["balanced_accuracy"]
    bias = info["class_bias"]
    assert bias[0] - max(bias[1:]) > -6.0  # the benign logit came back up against the others
    assert out.read_bytes() == handicapped.read_bytes()  # same weights
    model, _ = load_model(out)
    assert any(isinstance(m, ClassBias) for m in model.modules())
    # The validation figures printed are the ones recomputed from the written checkpoint.
    val = open_test_set(PHANTOM, info, out, part="val").dataset
    x, y = val.tensors()
    with torch.no_grad():
        pred = model(x).argmax(1)
    assert (pred == y).float().mean().item() == pytest.approx(point["after"]["accuracy"])
    assert "validation images" in stdout and "fortify evaluate" in stdout


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--min-recall", "malignant"], "expected CLASS=FLOOR"),
        (["--min-recall", "malignant=2"], "expected a number in [0, 1]"),
        (["--move", "cyst"], "unknown class 'cyst'"),
    ],
)
def test_bad_requests_are_one_line_and_write_nothing(handicapped, tmp_path, capsys, extra, message):
    out = tmp_path / "x.safetensors"
    code, _, err = run(
        ["operating-point", "--checkpoint", str(handicapped), "--data", PHANTOM, "--out", str(out), *extra],
        capsys,
    )
    assert code != 0 and err.strip().count("\n") == 0 and message in err, err
    assert list(tmp_path.iterdir()) == []


def test_it_never_overwrites_its_input_or_an_existing_file(handicapped, tmp_path, capsys):
    args = ["operating-point", "--checkpoint", str(handicapped), "--data", PHANTOM, "--out"]
    code, _, err = run([*args, str(handicapped), "--force"], capsys)
    assert code != 0 and "must differ from --checkpoint" in err
    taken = tmp_path / "taken.safetensors"
    taken.write_bytes(b"mine")
    code, _, err = run([*args, str(taken)], capsys)
    assert code != 0 and "exists" in err and taken.read_bytes() == b"mine"


def test_evaluate_attacks_the_model_with_its_offsets(tmp_path_factory, tmp_path, capsys):
    # A benign logit 1000 below the others is never the largest, under attack or not: evaluate must score
    # (and attack) the function with the offsets, and say so.
    muted = _with_offsets(tmp_path_factory, [-1000.0, 0.0, 0.0])
    out = tmp_path / "eval"
    argv = ["evaluate", "--checkpoint", str(muted), "--data", PHANTOM, "--out", str(out)]
    cheap = ["--attacks", "pgd:eps=8/255,steps=3", "--eps-curve", "0,8/255", "--curve-attack", "pgd:steps=2"]
    code, stdout, err = run([*argv, *cheap, "--precision", "fp32", "--device", "cpu"], capsys)
    assert code == 0, err
    results = read_json(out / "results.json")
    assert results["checkpoint"]["class_bias"] == [-1000.0, 0.0, 0.0]
    assert "logit offsets [-1000.0, 0.0, 0.0]" in stdout
    for block in (results["clean"], results["attacks"]["pgd"]):
        assert [row[0] for row in block["confusion"]] == [0, 0, 0]  # nothing predicted benign


def test_a_split_the_model_did_not_train_on_is_warned_about(handicapped, tmp_path, capsys):
    # Its validation images may be the model's training images: offsets chosen there would be overfitted.
    from fortify.data import make_split, save_manifest

    other = tmp_path / "other-split.json"
    save_manifest(make_split(PHANTOM, seed=7, image_size=32), other)
    out = tmp_path / "op.safetensors"
    code, _, err = run(
        ["operating-point", "--checkpoint", str(handicapped), "--data", PHANTOM, "--split", str(other)]
        + ["--out", str(out)],
        capsys,
    )
    assert code == 0 and out.is_file()
    assert "fortify: warning:" in err and "is not the split" in err
