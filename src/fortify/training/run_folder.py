"""Run directory bookkeeping: refuse to mix runs, start over on --force, find what to resume.

Layout: config.yaml, split.json (when the run made its own split), metrics.jsonl,
best.safetensors/best.json, last.safetensors/last.json/last.state.pt.
"""

from __future__ import annotations

import json
from pathlib import Path

from fortify.errors import ConfigError
from fortify.fileio import atomic_write_text, read_jsonl, read_yaml, write_yaml
from fortify.training.config import TrainConfig, config_differences

RUN_FILES = (
    "config.yaml",
    "split.json",
    "metrics.jsonl",
    "best.safetensors",
    "best.json",
    "last.safetensors",
    "last.json",
    "last.state.pt",
)


def read_run_config(run_dir: Path) -> TrainConfig | None:
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    try:
        return TrainConfig.from_dict(_legacy_defaults(read_yaml(path) or {}))
    except (ConfigError, TypeError, ValueError) as e:
        raise ConfigError(f"{path} is not a fortify training config ({e}); use --force to start over") from e


def _legacy_defaults(saved: dict) -> dict:
    """Fill fields that runs saved before they existed with the behaviour those runs had.

    Adversarial runs from before `craft_bn` crafted against running statistics; reading them as
    the new default ("batch") would let --resume switch recipes halfway without a word.
    """
    if isinstance(saved, dict) and "craft_bn" not in saved and saved.get("mode", "standard") != "standard":
        return {**saved, "craft_bn": "running"}
    return saved


def prepare_run_dir(run_dir: Path, cfg: TrainConfig, *, resume: bool, force: bool) -> bool:
    """Make `run_dir` ready for `cfg`; returns True when there is a checkpoint to resume from."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out {run_dir} exists and is not a directory")
    if force:
        for name in RUN_FILES:
            (run_dir / name).unlink(missing_ok=True)
    old = read_run_config(run_dir)
    has_last = (run_dir / "last.json").is_file() and (run_dir / "last.safetensors").is_file()
    if old is not None:
        diffs = config_differences(old, cfg)
        if diffs:
            raise ConfigError(
                f"run dir {run_dir} holds a different run ({diffs[0]}); "
                "use --force to overwrite it or choose another --out"
            )
        if has_last and not resume:
            raise ConfigError(
                f"run dir {run_dir} already has a run; use --resume to continue or --force to start over"
            )
    elif has_last:
        raise ConfigError(f"run dir {run_dir} has checkpoints but no config.yaml; use --force to start over")
    write_yaml(run_dir / "config.yaml", cfg.to_dict())
    return resume and has_last


def truncate_metrics(path: Path, last_epoch: int) -> None:
    """Drop metric lines past the checkpoint we resume from (written just before a crash)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by the crash
        if record.get("epoch", 0) <= last_epoch:
            kept.append(line)
    atomic_write_text(path, "".join(k + "\n" for k in kept))


def read_metrics(path: Path) -> list[dict]:
    return read_jsonl(path) if path.is_file() else []
