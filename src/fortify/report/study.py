"""The study's published Table 1 (configs/study_table1.yaml) and whether it applies to a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fortify.config_files import configs_dir
from fortify.errors import ConfigError
from fortify.fileio import read_yaml

STUDY_COLUMNS = ("clean", "pgd", "fgsm", "cw", "combined")
STUDY_DATASET = "IQ-OTH/NCCD"  # the name fortify.data.identity writes into audit.json's dataset.identity


def load_study_table(path: str | Path | None = None) -> dict[str, Any]:
    """{'citation', 'rows': {'normal': {'label', 'clean', ...}, 'adversarial': {...}}, 'path'}.

    Cells the study did not state are absent, and stay absent."""
    path = Path(path) if path else configs_dir() / "study_table1.yaml"
    table = read_yaml(path)
    if not isinstance(table, dict) or "rows" not in table:
        raise ConfigError(f"{path} is not a study table (needs 'rows')")
    table["path"] = str(path)
    return table


def is_study_data(audit: dict[str, Any] | None) -> bool:
    """Whether the run's audit identified its data as IQ-OTH/NCCD (what the study's figures show)."""
    return (((audit or {}).get("dataset") or {}).get("identity") or {}).get("name") == STUDY_DATASET


def study_for(audit: dict[str, Any] | None) -> tuple[dict[str, Any] | None, str | None]:
    """(study table, None) when the run's audit identified its data as IQ-OTH/NCCD, the dataset the study
    measured; else (None, a sentence saying why the study's rows are left out). The identification is
    read from audit.json (fortify.data.identity), never recomputed here."""
    identity = ((audit or {}).get("dataset") or {}).get("identity") or {}
    if not is_study_data(audit):
        why = identity.get("reason") or "audit.json does not identify the dataset"
        return None, (
            f"The study's rows are left out: its numbers were measured on {STUDY_DATASET}, and this run's "
            f"data is not that dataset ({why})."
        )
    try:
        return load_study_table(), None
    except Exception as e:  # the report must still build without the study table; say so
        return None, f"Study table unavailable ({e}); the study's rows are left out."
