"""Ctrl-C: exit code 130 and the exact command that continues the work."""

from __future__ import annotations

import pytest

import fortify.data
import fortify.pipeline
import fortify.training
from fortify.cli import main


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def _ctrl_c(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 130
    lines = capsys.readouterr().err.strip().splitlines()
    err = [line for line in lines if not line.startswith("fortify: note: nothing to resume")]
    assert len(err) == 1 and err[0].startswith("fortify: error: interrupted"), err
    return err[0]


def test_train_names_the_same_command_with_resume_and_without_force(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(fortify.training, "train", _interrupt)
    out = tmp_path / "my run"
    line = _ctrl_c(capsys, ["train", "--data", "phantom:n=12", "--out", str(out), "--epochs", "3", "--force"])
    assert line.endswith(
        f"to continue, run: fortify train --data phantom:n=12 --out '{out}' --epochs 3 --resume"
    )


def test_reproduce_keeps_a_given_resume_once(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(fortify.pipeline, "reproduce", _interrupt)
    argv = ["reproduce", "--data", "phantom", "--out", str(tmp_path / "r"), "--resume", "--profile", "smoke"]
    line = _ctrl_c(capsys, argv)
    assert line.endswith("run: fortify " + " ".join(argv)) and line.count("--resume") == 1


def test_a_command_without_resume_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(fortify.data, "make_split", _interrupt)
    line = _ctrl_c(capsys, ["split", "phantom:n=12", "--out", str(tmp_path / "s.json")])
    assert "fortify split cannot resume" in line and "--resume" not in line
