"""Where the shipped configs (profiles, the study's Table 1) live. A leaf module."""

from __future__ import annotations

import os
from pathlib import Path

from fortify.errors import ConfigError


def configs_dir() -> Path:
    """Where the shipped configs live: $FORTIFY_CONFIGS, else the package's own `configs/` (package data, so
    a wheel carries them; the repository's top-level `configs` is a link to it)."""
    env = os.environ.get("FORTIFY_CONFIGS")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parent / "configs")
    for path in candidates:
        if path.is_dir():
            return path
    raise ConfigError("cannot find fortify's configs/ folder; set FORTIFY_CONFIGS to it")
