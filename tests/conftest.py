"""Shared fixtures.

Real-data tests are marked `real_data`. They use ../shared/datasets/iqothnccd (or $FORTIFY_DATA).
Locally they skip when the dataset is absent; in CI (CI=true or FORTIFY_REQUIRE_DATA=1) a missing
dataset is a failure, so CI cannot pass by skipping them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "datasets" / "iqothnccd"

# Tests share 2 cores with other work; keep torch from oversubscribing.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def _data_required() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("FORTIFY_REQUIRE_DATA") == "1"


@pytest.fixture(scope="session")
def real_data_path() -> Path:
    path = Path(os.environ.get("FORTIFY_DATA", DEFAULT_DATA))
    if not path.is_dir():
        if _data_required():
            pytest.fail(f"real dataset required in CI but missing at {path}")
        pytest.skip(f"real dataset not found at {path}")
    return path


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One decode cache per test session, so real-data tests decode the JPEGs once."""
    return tmp_path_factory.mktemp("fortify-cache")


def _cli(args: list[str]) -> int:
    """The exit code of `fortify ARGS` through its real entry point (0 when it returns without SystemExit)."""
    from fortify.cli import main  # imported on use: most tests never run the CLI

    try:
        main(args)
    except SystemExit as e:
        return int(e.code or 0)
    return 0


@pytest.fixture
def cli() -> Callable[[list[str]], int]:
    """Run `fortify` as a user would (the CLI tests and the explorer's `fortify explore` test)."""
    return _cli
