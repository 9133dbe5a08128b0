"""Stage fingerprints: a hash of a stage's resolved config and of its inputs' contents.

A stage is up to date when its record (written after its outputs) holds the fingerprint we compute now
and every output still exists; then `--resume` skips it."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from fortify.fileio import read_json, write_json


def data_identity(data: str) -> str:
    """Cheap identity of a dataset: the phantom spec, or every file's relative path, size and mtime.

    Content hashes are checked by the data layer itself (the split manifest pins every file's sha256);
    this only has to notice that the folder changed, without reading 1,097 JPEGs on every resume."""
    if data.startswith("phantom"):
        return data
    root = Path(data)
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            st = p.stat()
            h.update(f"{p.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def fingerprint(stage: str, config: dict[str, Any], inputs: dict[str, str]) -> str:
    blob = json.dumps({"stage": stage, "config": config, "inputs": inputs}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def without_new_defaults(
    config: dict[str, Any], saved: dict[str, Any] | None, defaults: dict[str, Any]
) -> dict[str, Any] | None:
    """`config` less the keys a record written by an older fortify lacks, when each of them holds its
    default (an option added since, at the value that keeps the old behaviour); None when there is no such
    key or one of them was set. Its fingerprint is what the older version computed for the same run, so an
    upgrade does not throw away finished stages (hours of a cross-validation) for options nobody used."""
    if saved is None:
        return None
    added = [k for k in config if k not in saved]
    if not added or any(k not in defaults or config[k] != defaults[k] for k in added):
        return None
    return {k: v for k, v in config.items() if k not in added}


def with_retired(
    current: dict[str, Any], saved: dict[str, Any] | None, retired: tuple[str, ...]
) -> dict[str, Any] | None:
    """`current` plus the record's values of keys (config or inputs) the stage no longer counts; None when
    the record has none. Training once also hashed the dataset folder's file times and the paths of its
    split and init checkpoint; it still hashes their contents, so a record that differs only there is as
    good as a new one."""
    if not isinstance(saved, dict) or not any(k in saved for k in retired):
        return None
    return {**current, **{k: saved[k] for k in retired if k in saved}}


def is_up_to_date(
    record_path: Path,
    stage: str,
    config: dict[str, Any],
    inputs: dict[str, str],
    outputs: list[Path],
    *,
    defaults: dict[str, Any] | None = None,
    retired_inputs: tuple[str, ...] = (),
    retired_config: tuple[str, ...] = (),
) -> bool:
    """Whether the stage's record matches this config and these inputs and every output exists. A record
    written before an option existed (`defaults`) or while the stage counted an input or config key it has
    since dropped (`retired_*`) still matches when the result would be the same."""
    if not record_path.is_file() or not all(p.exists() for p in outputs):
        return False
    try:
        record = read_json(record_path)
    except ValueError:
        return False
    saved_config = record.get("config") if isinstance(record.get("config"), dict) else None
    configs = [config, without_new_defaults(config, saved_config, defaults or {})]
    configs += [with_retired(c, saved_config, retired_config) for c in configs if c is not None]
    inputs_options = [inputs, with_retired(inputs, record.get("inputs"), retired_inputs)]
    return any(
        record.get("fingerprint") == fingerprint(stage, c, i)
        for c in configs
        if c is not None
        for i in inputs_options
        if i is not None
    )


def write_record(
    record_path: Path,
    stage: str,
    fp: str,
    config: dict[str, Any],
    inputs: dict[str, str],
    seconds: float,
    cpu_seconds: float,
) -> None:
    # cpu_seconds (all threads of this process) tells how much work a stage was even when the CPU is
    # shared and wall time mostly measures the neighbours.
    write_json(
        record_path,
        {
            "stage": stage,
            "fingerprint": fp,
            "config": config,
            "inputs": inputs,
            "seconds": round(seconds, 2),
            "cpu_seconds": round(cpu_seconds, 2),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
