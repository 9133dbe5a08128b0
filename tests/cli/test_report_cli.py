"""`fortify report` and `fortify reproduce` through the real entry point (fortify.cli.main)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "report_fixture", Path(__file__).resolve().parents[1] / "report" / "conftest.py"
)
report_fixture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report_fixture)


def test_report_command_builds_and_prints_table1(cli, tmp_path, capsys):
    run = report_fixture.make_run(tmp_path / "run", failing=True)
    assert cli(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert (run / "report" / "report.html").is_file()
    assert "Table 1" in out and "93.12" in out and "96.67" in out  # study and ours side by side
    assert "83.33!" in out  # adversarial PGD undermined by a failed sanity check


def test_report_on_missing_dir_is_one_line_error(cli, tmp_path, capsys):
    assert cli(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fortify: error: run directory not found")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--profile", "huge"], "unknown profile 'huge'"),
        (["--defense", "adamw"], "unknown defense 'adamw'"),
        (["--precision", "fp8"], "unknown precision"),
    ],
)
def test_reproduce_bad_options(cli, tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    assert cli(["reproduce", "--data", "phantom", "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not out.exists()


def test_reproduce_missing_data(cli, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(["reproduce", "--data", str(tmp_path / "nope"), "--out", str(out), "--profile", "smoke"]) == 2
    assert "data path not found" in capsys.readouterr().err
    assert not out.exists()


def test_reproduce_refuses_dir_holding_another_run(cli, tmp_path, capsys):
    run = report_fixture.make_run(tmp_path / "run")  # a finished run on other data
    before = sorted(p.name for p in run.iterdir())
    assert cli(["reproduce", "--data", "phantom", "--out", str(run), "--profile", "smoke", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "holds another run (data: '/data/iqothnccd' != 'phantom')" in err
    assert sorted(p.name for p in run.iterdir()) == before


def test_reproduce_help_names_every_built_in_profile(cli, capsys):
    from fortify.cli.reproduce_command import PROFILES_HELP
    from fortify.pipeline.profiles import list_profiles

    assert sorted(PROFILES_HELP.split(" | ")) == list_profiles()
    assert cli(["profile", "list"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == list_profiles()


def test_profile_show_prints_a_loadable_profile(cli, tmp_path, capsys):
    from fortify.pipeline.profiles import load_profile

    assert cli(["profile", "show", "quick"]) == 0
    text = capsys.readouterr().out
    (tmp_path / "copy.yaml").write_text(text)
    assert load_profile(str(tmp_path / "copy.yaml")) == load_profile("quick")
    assert "sanity_restarts:" in text and "fold_bn:" in text  # defaults quick.yaml leaves out


def test_reproduce_set_with_a_bad_key_is_one_line_and_writes_nothing(cli, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(["reproduce", "--data", "phantom", "--out", str(out), "--set", "train.epoch=2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown key 'train.epoch'" in err[0] and "epochs" in err[0]
    assert not out.exists()


def test_reproduce_shortcut_options_become_profile_overrides(tmp_path):
    from fortify.cli.reproduce_command import _overrides
    from fortify.errors import ConfigError

    weights = tmp_path / "w.pth"
    weights.write_bytes(b"x")
    got = _overrides(
        ["eps=4/255", "train.epochs=3"], "8/255", "resnet34", None, "given", "explain, certify", weights
    )
    assert got["eps"] == "8/255"  # the shortcut wins over --set, as it is the more specific option
    assert got["model"] == "resnet34" and got["grouping"] == "given" and "window" not in got
    assert got["extras"] == ["explain", "certify"] and got["weights"] == str(weights.resolve())
    assert got["train.epochs"] == 3
    with pytest.raises(ConfigError, match="--weights file not found"):
        _overrides([], None, None, None, None, None, tmp_path / "missing.pth")
