"""cli/__init__.py's COMMANDS table: one module per command, each registered the same way."""

from __future__ import annotations

import importlib

import typer
import typer.main

from fortify.cli import COMMANDS, _register_all, app


def test_each_command_module_registers_exactly_its_own_name():
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"fortify.cli.{module_name}")
        assert module.NAME == name
        fresh = typer.Typer()
        module.register(fresh)
        registered = [c.name for c in fresh.registered_commands] + [g.name for g in fresh.registered_groups]
        assert registered == [name], module_name


def test_the_app_has_every_command_of_the_table():
    _register_all()
    assert set(typer.main.get_command(app).commands) == set(COMMANDS)
