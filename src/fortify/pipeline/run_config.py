"""The run directory as a whole: its config.yaml (resolved profile + every parameter) and the rules for
reusing a folder: empty or new is fine; a run with the same config continues only with --resume; another
run, or a folder that is not a run, is refused unless --force (which wipes it)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from fortify import __version__
from fortify.errors import ConfigError, DataError
from fortify.fileio import read_yaml
from fortify.pipeline.profiles import Profile
from fortify.runtime import Runtime

RUN_FORMAT = "fortify-run/1"
# Where/how a run executes, not what it computes: may differ on --resume.
RUN_ONLY_KEYS = ("fortify_version", "device", "runtime", "resolved")  # "resolved" follows from the rest


def check_data(data: str | Path) -> str:
    text = str(data)
    if text.startswith("phantom"):
        return text
    path = Path(text).expanduser()
    if not path.exists():
        raise DataError(f"data path not found: {data}")
    if not path.is_dir():
        raise DataError(f"data path is not a folder of class subfolders: {data}")
    return str(path.resolve())


def run_config(
    profile: Profile,
    data: str,
    defense: str,
    device: str,
    precision: str,
    runtime: Runtime,
    overrides: dict[str, Any] | None,
) -> dict[str, Any]:
    """RUN_DIR/config.yaml: the resolved profile plus every parameter of this run."""
    p = profile.to_dict()
    p.pop("defense")  # the resolved one (a --defense given beats the profile's) sits at the top
    return {
        "format": RUN_FORMAT,
        "fortify_version": __version__,
        "data": data,
        "profile": p.pop("name"),
        "defense": defense,
        "device": device,
        "precision": precision,
        "runtime": runtime.describe(),
        "overrides": dict(overrides or {}),
        **p,
    }


def _comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cfg.items() if k not in RUN_ONLY_KEYS}


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    a, b = _comparable(old), _comparable(new)
    first = ("profile", "data", "defense")  # the likeliest mistakes are named first
    keys = [k for k in first if k in a or k in b] + sorted((set(a) | set(b)) - set(first))
    return [f"{k}: {a.get(k)!r} != {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]


def _refuse_to_wipe(out: Path) -> None:
    """--force deletes the folder's contents; never for a folder that holds the caller or a repository."""
    cwd, home = Path.cwd().resolve(), Path.home().resolve()
    if out == Path(out.anchor) or out == home or out == cwd or out in cwd.parents or (out / ".git").exists():
        raise ConfigError(
            f"refusing to wipe {out} with --force (it holds the current folder, home or a repo)"
        )


def prepare_out(out: Path, cfg: dict[str, Any], *, resume: bool, force: bool) -> None:
    """Decide whether `out` may be used; raise ConfigError (before anything is written) if not."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    old = None
    cfg_path = out / "config.yaml"
    if cfg_path.is_file():
        try:
            old = read_yaml(cfg_path)
        except Exception:  # unreadable YAML: not a run we can continue
            old = None
    is_run = isinstance(old, dict) and old.get("format") == RUN_FORMAT
    if force:
        _refuse_to_wipe(out)
        for child in out.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        return
    if not is_run:
        raise ConfigError(
            f"--out {out} is not empty and holds no fortify run; choose another folder or --force"
        )
    diffs = _differences(old, cfg)
    if not resume:
        what = f"another run ({diffs[0]})" if diffs else "a run with this configuration"
        raise ConfigError(f"--out {out} holds {what}; use --resume to continue it or --force to start over")
    if diffs:
        raise ConfigError(
            f"--out {out} holds another run ({diffs[0]}); use --force to start over or choose another --out"
        )
