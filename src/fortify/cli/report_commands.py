"""Placeholder: the owner of this module replaces it with real subcommands."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's subcommands to the `fortify` app."""
