"""--resume where there is nothing to resume: the same one-line note in every command that resumes; and
`fortify split` refuses a folder as --out before it computes anything."""

from __future__ import annotations

import pytest

import fortify.data
import fortify.pipeline
import fortify.training
from fortify.cli import main
from fortify.errors import FortifyError


def _stop(*args, **kwargs):
    raise FortifyError("stopped before any work")


def _stderr(argv: list[str], capsys) -> list[str]:
    with pytest.raises(SystemExit):
        main(argv)
    return capsys.readouterr().err.splitlines()


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--data", "phantom:n=12", "--epochs", "1"],
        ["reproduce", "--data", "phantom", "--profile", "smoke"],
    ],
)
def test_resume_on_a_missing_folder_says_it_starts_a_new_run(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(fortify.training, "train", _stop)
    monkeypatch.setattr(fortify.pipeline, "reproduce", _stop)
    out = tmp_path / "never made"
    err = _stderr([*argv, "--out", str(out), "--resume"], capsys)
    assert err[0] == f"fortify: note: nothing to resume in {out}: starting a new run"


def test_split_refuses_a_folder_as_out_before_splitting(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(fortify.data, "make_split", lambda *a, **k: pytest.fail("split computed"))
    err = _stderr(["split", "phantom:n=12", "--out", str(tmp_path)], capsys)
    assert err == [
        f"fortify: error: --out {tmp_path} is a folder; give a file name (e.g. {tmp_path / 'split.json'})"
    ]
