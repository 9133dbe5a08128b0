"""Read a run directory into plain dicts. The report never recomputes a metric: it shows what the
stages wrote, and says which file each number came from. Missing stages are tolerated and listed."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fortify.errors import ConfigError
from fortify.fileio import read_json, read_jsonl, read_yaml

STAGES = ("normal", "adversarial")


@dataclass
class StageData:
    """One trained model and its evaluation (`RUN_DIR/<name>/`)."""

    name: str
    train_config: dict[str, Any] | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl, one record per epoch
    results: dict[str, Any] | None = None  # eval/results.json
    results_path: Path | None = None
    examples_path: Path | None = None  # eval/examples.safetensors


@dataclass
class RunData:
    root: Path
    config: dict[str, Any] | None
    audit: dict[str, Any] | None
    split: dict[str, Any] | None
    stages: dict[str, StageData]
    transfer: dict[str, Any] | None
    missing: list[str]  # human-readable list of what was not found
    comparison: dict[str, Any] | None = None  # comparison.json: paired normal vs adversarial test

    def rel(self, path: Path | None) -> str:
        """Path relative to the run dir, for 'source:' lines."""
        if path is None:
            return "?"
        try:
            return str(Path(path).relative_to(self.root))
        except ValueError:
            return str(path)

    @property
    def synthetic(self) -> bool:
        """True if any stage says the data was synthetic (the phantom), or the config names it."""
        for stage in self.stages.values():
            if stage.results and stage.results.get("data", {}).get("synthetic"):
                return True
        if self.audit and (self.audit.get("synthetic") or (self.audit.get("dataset") or {}).get("synthetic")):
            return True
        data = str((self.config or {}).get("data", ""))
        return data.startswith("phantom")


def _read_optional(path: Path, reader, missing: list[str], what: str):
    if not path.is_file():
        missing.append(f"{what} ({path.name} not found)")
        return None
    try:
        return reader(path)
    except (OSError, ValueError, json.JSONDecodeError) as e:
        missing.append(f"{what} ({path.name} unreadable: {e})")
        return None


FOLD_DIR = re.compile(r"fold-\d+")


def load_run(run_dir: str | Path) -> RunData:
    root = Path(run_dir).resolve()
    if not root.is_dir():
        raise ConfigError(f"run directory not found: {run_dir}")
    missing: list[str] = []
    # A cross-validation fold (RUN_DIR/fold-<i>/) shares the run's config.yaml and audit.json.
    shared = root.parent if FOLD_DIR.fullmatch(root.name) and not (root / "config.yaml").exists() else root
    config = _read_optional(shared / "config.yaml", read_yaml, missing, "run config")
    audit = _read_optional(shared / "audit.json", read_json, missing, "data audit")
    split = _read_optional(root / "split.json", read_json, missing, "split manifest")
    stages: dict[str, StageData] = {}
    for name in STAGES:
        stage_dir = root / name
        if not stage_dir.is_dir():
            missing.append(f"{name} stage ({name}/ not found)")
            continue
        stage = StageData(name=name)
        stage.train_config = _read_optional(
            stage_dir / "config.yaml", read_yaml, missing, f"{name} training config"
        )
        metrics_path = stage_dir / "metrics.jsonl"
        if metrics_path.is_file():
            stage.metrics = read_jsonl(metrics_path)
        else:
            missing.append(f"{name} training curves (metrics.jsonl not found)")
        results_path = stage_dir / "eval" / "results.json"
        stage.results = _read_optional(results_path, read_json, missing, f"{name} evaluation")
        if stage.results is not None:
            stage.results_path = results_path
            ex_name = (stage.results.get("examples") or {}).get("file", "examples.safetensors")
            ex_path = results_path.parent / ex_name
            stage.examples_path = ex_path if ex_path.is_file() else None
            if stage.examples_path is None:
                missing.append(f"{name} example scans ({ex_name} not found)")
        stages[name] = stage
    transfer = _read_optional(root / "transfer.json", read_json, missing, "transfer evaluation")
    comparison = _read_optional(root / "comparison.json", read_json, missing, "paired comparison")
    if config is None and audit is None and split is None and not stages and transfer is None:
        raise ConfigError(f"{run_dir} holds no fortify run (no config.yaml, results or metrics)")
    return RunData(root, config, audit, split, stages, transfer, missing, comparison)
