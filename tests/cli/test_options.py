"""cli/options.py: shared options are declared once; `fortify train`'s options are TrainConfig's fields."""

from __future__ import annotations

from dataclasses import dataclass, fields

import pytest
import typer.main
from typer.testing import CliRunner

from fortify.cli import _register_all, app
from fortify.cli.options import DATA_HELP, DEVICE_HELP, field_comments
from fortify.cli.train_command import recipe_defaults
from fortify.pipeline import load_profile
from fortify.training import TrainConfig


@pytest.fixture(scope="module")
def commands():
    _register_all()
    group = typer.main.get_command(app)
    out = dict(group.commands)
    for name, sub in list(out.items()):
        out.update({f"{name} {k}": c for k, c in getattr(sub, "commands", {}).items()})
    return out


def _opts(cmd) -> dict[str, object]:
    return {p.opts[0]: p for p in cmd.params if p.opts and p.opts[0].startswith("--")}


def test_shared_options_read_the_same_in_every_command(commands):
    helps: dict[str, set[str]] = {"--data": set(), "--device": set()}
    for cmd in commands.values():
        for name, p in _opts(cmd).items():
            if name in helps:
                helps[name].add(p.help)
    assert helps["--data"] == {DATA_HELP}  # train, evaluate, attack, explain, detect, certify, reproduce
    assert helps["--device"] == {DEVICE_HELP}
    with_data = [n for n, c in commands.items() if "--data" in _opts(c)]
    assert {"train", "evaluate", "attack", "explain", "detect", "certify", "reproduce"} <= set(with_data)


def test_train_options_are_trainconfig_fields_with_the_quick_recipe_as_defaults(commands):
    opts = _opts(commands["train"])
    expected = {"--" + f.name.replace("_", "-") for f in fields(TrainConfig)}
    assert set(opts) - {"--resume", "--force", "--json", "--help"} == expected
    recipe = recipe_defaults()
    quick = load_profile("quick")
    assert recipe["optimizer"] == "adamw" and recipe["lr"] == quick.normal["lr"]
    assert recipe["epochs"] == quick.normal["epochs"] and recipe["batch_size"] == quick.train["batch_size"]
    base = TrainConfig()
    for f in fields(TrainConfig):
        p = opts["--" + f.name.replace("_", "-")]
        if f.name in ("data", "out"):
            assert p.required
        elif f.name != "eps":
            assert p.default == recipe.get(f.name, getattr(base, f.name)), f.name
    assert opts["--augment"].secondary_opts == ["--no-augment"]  # a True default can be turned off


def test_train_help_names_its_recipe():
    _register_all()
    result = CliRunner().invoke(app, ["train", "--help"], terminal_width=200)
    assert result.exit_code == 0
    assert "quick profile's normal-model recipe" in result.output and "optimizer adamw" in result.output


def test_field_comments_are_the_trailing_comment_of_each_field():
    @dataclass
    class S:
        # a comment line of its own documents nothing
        a: int = 1  # the a
        b: str = "x#y"
        c: tuple = (  # the c
            1,
        )

    assert field_comments(S) == {"a": "the a", "c": "the c"}
