"""`fortify certify` through the real entry point (the command registered the way cli/__init__ will)."""

from __future__ import annotations

import pytest

import fortify.cli as cli
from fortify.cli import certify_command
from fortify.fileio import read_json

CHEAP = (
    "--n0 10 --n 20 --alpha 0.01 --limit 3 --radii 0.2 --attack-steps 1 --attack-samples 2 --attack-n 10 "
    "--batch-size 40 --finetune-epochs 0 --device cpu --precision fp32"
).split()


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    real = cli._register_all

    def with_certify() -> None:
        real()
        certify_command.register(cli.app)

    monkeypatch.setattr(cli, "_register_all", with_certify)


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def _one_line_error(code: int, err: str, text: str) -> None:
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and lines[0].startswith("fortify: error: "), err
    assert text in lines[0]


def test_certify_writes_certify_json(tiny_checkpoint, phantom, tmp_path, capsys):
    out = tmp_path / "cert"
    code, stdout, err = run(
        ["certify", "--checkpoint", str(tiny_checkpoint), "--data", phantom, "--out", str(out), *CHEAP],
        capsys,
    )
    assert code == 0, err
    payload = read_json(out / "certify.json")
    assert payload["n"] == 20 and payload["n0"] == 10 and payload["data"]["n"] == 3
    assert payload["settings"]["finetune_epochs"] == 0 and "as is" in payload["model"]["label"]
    assert "certified" in stdout and ("PASS" in stdout or "FAIL" in stdout)
    # A second run into the same folder is refused without --force / --resume.
    code, _, err = run(
        ["certify", "--checkpoint", str(tiny_checkpoint), "--data", phantom, "--out", str(out), *CHEAP],
        capsys,
    )
    _one_line_error(code, err, "already holds")


@pytest.mark.parametrize(
    "args,text",
    [
        (["--sigma", "0"], "sigma must be a number > 0"),
        (["--sigma", "-0.5"], "sigma must be a number > 0"),
        (["--alpha", "0.7"], "alpha"),
        (["--radii", "0.1,x"], "--radii"),
        (["--eps", "3"], "--eps"),
    ],
)
def test_bad_settings_are_one_line_errors_before_any_work(
    tiny_checkpoint, phantom, tmp_path, capsys, args, text
):
    out = tmp_path / "never"
    code, _, err = run(
        ["certify", "--checkpoint", str(tiny_checkpoint), "--data", phantom, "--out", str(out), *args], capsys
    )
    _one_line_error(code, err, text)
    assert not out.exists()


def test_missing_checkpoint_is_a_one_line_error(tmp_path, capsys):
    code, _, err = run(
        ["certify", "--checkpoint", str(tmp_path / "none.safetensors"), "--data", "phantom", "--out",
         str(tmp_path / "o")], capsys,
    )  # fmt: skip
    _one_line_error(code, err, "checkpoint not found")
