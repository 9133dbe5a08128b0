"""`fortify explain` through the real CLI entry point, registered on the app for the test."""

from __future__ import annotations

import pytest
from conftest import PHANTOM

from fortify.cli import app, explain_command, main
from fortify.explain.cam import METHODS
from fortify.fileio import read_json

CHEAP = ["--attack", "pgd:eps=8/255,steps=2", "--limit", "6", "--surrogate", "none"]
CHEAP += ["--device", "cpu", "--precision", "fp32"]


@pytest.fixture(autouse=True, scope="module")
def registered():
    if not any(c.name == "explain" for c in app.registered_commands):
        explain_command.register(app)


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def one_line_error(code: int, err: str) -> str:
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fortify: error: "), err
    return lines[0]


@pytest.mark.slow
def test_explain_writes_json_and_figures(tiny_checkpoint, tiny_checkpoint_b, tmp_path, capsys):
    out = tmp_path / "explain"
    argv = ["explain", "--normal", str(tiny_checkpoint), "--adversarial", str(tiny_checkpoint_b)]
    code, stdout, err = run([*argv, "--data", PHANTOM, "--out", str(out), *CHEAP], capsys)
    assert code == 0, err
    payload = read_json(out / "explain.json")
    assert set(payload["models"]) == {"normal", "adversarial"} and payload["data"]["n"] == 6
    for rel in payload["figures"].values():
        assert (out / rel).is_file()
    assert sorted(p.name for p in (out / "figures").iterdir()) == [
        "explain-adversarial.png",
        "explain-normal.png",
    ]
    assert " ".join(payload["verdict"].split()) in " ".join(stdout.split())  # rich wraps long lines
    # The same folder again is refused without --force.
    code, _, err = run([*argv, "--data", PHANTOM, "--out", str(out), *CHEAP], capsys)
    assert "--force" in one_line_error(code, err)


@pytest.mark.slow
def test_single_checkpoint(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "one"
    argv = ["explain", "--checkpoint", str(tiny_checkpoint), "--data", PHANTOM, "--out", str(out), *CHEAP]
    code, _, err = run([*argv, "--method", "xgradcam"], capsys)
    assert code == 0, err
    payload = read_json(out / "explain.json")
    assert list(payload["models"]) == ["checkpoint"] and payload["paired"] is None
    assert payload["cam"]["method"] == "xgradcam"


def test_bad_method_is_one_line_listing_the_valid_ones(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "bad"
    argv = ["explain", "--checkpoint", str(tiny_checkpoint), "--data", PHANTOM, "--out", str(out)]
    code, _, err = run([*argv, "--method", "gradcamm"], capsys)
    line = one_line_error(code, err)
    assert "gradcamm" in line and all(m in line for m in METHODS)
    assert not out.exists(), "nothing is written for a typo"


def test_bad_combinations_are_one_line(tiny_checkpoint, tmp_path, capsys):
    base = ["explain", "--data", PHANTOM, "--out", str(tmp_path / "x")]
    code, _, err = run(
        [*base, "--checkpoint", str(tiny_checkpoint), "--normal", str(tiny_checkpoint)], capsys
    )
    assert "--checkpoint alone" in one_line_error(code, err)
    code, _, err = run(base, capsys)
    assert "--normal" in one_line_error(code, err)
    code, _, err = run([*base, "--normal", str(tmp_path / "model.pt")], capsys)
    assert ".safetensors" in one_line_error(code, err)
    code, _, err = run([*base, "--normal", str(tiny_checkpoint), "--surrogate", "vit"], capsys)
    assert "smallcnn" in one_line_error(code, err)
