"""The study's published Table 1 (configs/study_table1.yaml) and the locator for the configs folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fortify.errors import ConfigError
from fortify.fileio import read_yaml

STUDY_COLUMNS = ("clean", "pgd", "fgsm", "cw", "combined")


def configs_dir() -> Path:
    """Where the shipped configs live: $FORTIFY_CONFIGS, else the repo's `configs/` (src layout: three levels
    above this package; works for a plain clone and for `pip install -e .`)."""
    env = os.environ.get("FORTIFY_CONFIGS")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[3] / "configs")
    for path in candidates:
        if path.is_dir():
            return path
    raise ConfigError("cannot find fortify's configs/ folder; set FORTIFY_CONFIGS to it")


def load_study_table(path: str | Path | None = None) -> dict[str, Any]:
    """{'citation', 'rows': {'normal': {'label', 'clean', ...}, 'adversarial': {...}}, 'path'}.

    Cells the study did not state are absent, and stay absent."""
    path = Path(path) if path else configs_dir() / "study_table1.yaml"
    table = read_yaml(path)
    if not isinstance(table, dict) or "rows" not in table:
        raise ConfigError(f"{path} is not a study table (needs 'rows')")
    table["path"] = str(path)
    return table
