"""`fortify evaluate` through the real CLI entry point: the summary, and every bad input refused."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluation"))
from fortify_eval_fixtures import (
    PHANTOM,
    tiny_checkpoint_b_path,
    tiny_checkpoint_path,
    wrong_classes_checkpoint_path,
)  # noqa: E402

from fortify.cli import main  # noqa: E402
from fortify.fileio import read_json  # noqa: E402

CHEAP = [
    "--attacks",
    "fgsm:eps=8/255",
    "--attacks",
    "pgd:eps=8/255,steps=3",
    "--eps-curve",
    "0,8/255",
    "--curve-attack",
    "pgd:steps=2",
    "--precision",
    "fp32",
    "--device",
    "cpu",
]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    return tiny_checkpoint_path(tmp_path_factory)


@pytest.fixture(scope="module")
def wrong_classes_checkpoint(tmp_path_factory):
    return wrong_classes_checkpoint_path(tmp_path_factory)


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def _one_line_error(code: int, err: str) -> None:
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fortify: error: "), err
    assert "Traceback" not in err


def test_evaluate_prints_summary_and_writes_results(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "eval"
    code, stdout, err = run(
        ["evaluate", "--checkpoint", str(tiny_checkpoint), "--data", PHANTOM, "--out", str(out), *CHEAP]
        + ["--patient-rule", "max:malignant"],
        capsys,
    )
    assert code == 0, err
    results = read_json(out / "results.json")
    assert results["patient"]["rule"] == "max:malignant" and "patients (" in stdout
    assert (out / "examples.safetensors").is_file()
    for row in ("clean", "fgsm", "pgd", "combined", "worst case", "SYNTHETIC", "Sanity checks"):
        assert row in stdout, row
    assert f"{100 * results['worst_case']['accuracy']:.1f}%" in stdout
    assert ("FAIL" in stdout) == any(not c["passed"] for c in results["sanity"])
    assert "PASS" in stdout
    # The same folder again is refused (it holds a run) and the run is left untouched...
    before = (out / "results.json").read_bytes()
    code, _, err = run(
        ["evaluate", "--checkpoint", str(tiny_checkpoint), "--data", PHANTOM, "--out", str(out), *CHEAP],
        capsys,
    )
    _one_line_error(code, err)
    assert "--force" in err and (out / "results.json").read_bytes() == before
    # ...unless --force.
    code, _, err = run(
        [
            "evaluate",
            "--checkpoint",
            str(tiny_checkpoint),
            "--data",
            PHANTOM,
            "--out",
            str(out),
            "--force",
            *CHEAP,
        ],
        capsys,
    )
    assert code == 0, err


@pytest.mark.parametrize(
    "case",
    [
        "pt_checkpoint",
        "missing_checkpoint",
        "bad_spec",
        "unknown_attack",
        "bad_eps",
        "bad_curve",
        "wrong_classes",
        "bad_patient_rule",
    ],
)
def test_bad_inputs_fail_with_one_line_and_write_nothing(
    case, tiny_checkpoint, wrong_classes_checkpoint, tmp_path, capsys
):
    ckpt, extra = str(tiny_checkpoint), []
    if case == "pt_checkpoint":
        ckpt = str(tmp_path / "model.pt")
        torch.save({"w": torch.zeros(1)}, ckpt)
    elif case == "missing_checkpoint":
        ckpt = str(tmp_path / "nope.safetensors")
    elif case == "bad_spec":
        extra = ["--attacks", "pgd:eps=2/255,steps=abc"]
    elif case == "unknown_attack":
        extra = ["--attacks", "deepfool:eps=2/255"]
    elif case == "bad_eps":
        extra = ["--eps", "two"]
    elif case == "bad_curve":
        extra = ["--curve-attack", "pgd:stepz=3"]
    elif case == "wrong_classes":
        ckpt = str(wrong_classes_checkpoint)
    elif case == "bad_patient_rule":
        extra = ["--patient-rule", "max:cancer"]
    out = tmp_path / "out"
    code, _, err = run(
        ["evaluate", "--checkpoint", ckpt, "--data", PHANTOM, "--out", str(out), *extra], capsys
    )
    _one_line_error(code, err)
    assert not (out / "results.json").exists() and not (out / "examples.safetensors").exists()


def test_evaluate_with_transfer_from_another_checkpoint(tiny_checkpoint, tmp_path_factory, tmp_path, capsys):
    source = tiny_checkpoint_b_path(tmp_path_factory)
    out = tmp_path / "eval"
    argv = [
        "evaluate",
        "--checkpoint",
        str(tiny_checkpoint),
        "--data",
        PHANTOM,
        "--out",
        str(out),
        *CHEAP,
        "--limit",
        "6",
        "--transfer-from",
        str(source),
        "--transfer-attack",
        "pgd:eps=8/255,steps=2",
    ]
    code, stdout, err = run(argv, capsys)
    assert code == 0, err
    results = read_json(out / "results.json")
    (pair,) = results["transfer"]
    assert pair["source"] == str(source) and pair["n"] == 6
    check = next(c for c in results["sanity"] if c["check"] == "white-box no weaker than transfer")
    assert check["passed"] == (pair["white_box_accuracy"] <= pair["transfer_accuracy"] + 0.01)
    assert "transfer pgd" in stdout
