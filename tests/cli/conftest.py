"""Shared by the CLI tests: run `fortify` through its real entry point (fortify.cli.main)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fortify.cli import main


def _cli(args: list[str]) -> int:
    """The exit code of `fortify ARGS` (0 when it returns without SystemExit)."""
    try:
        main(args)
    except SystemExit as e:
        return int(e.code or 0)
    return 0


@pytest.fixture
def cli() -> Callable[[list[str]], int]:
    return _cli
