"""Work units: an evaluation's per-image work cut into fixed slices of its test set.

Unit k holds test images [k * unit_size, (k + 1) * unit_size): the boundaries depend only on the evaluated
test set and the unit size, never on how many processes run. Everything random inside a unit draws from
a seed made of (run seed, what is computed, unit index), and the batches inside a unit are fixed by the
unit, so a unit's outcome is the same whichever process computes it, in whatever order, after however
many interruptions. A finished unit is one safetensors file written atomically (per-image tensors, and a
JSON header for counts and seconds) under `<out>/units/`, beside `units/config.json`, the fingerprint of
the configuration the units belong to: a resumed evaluation reuses every unit whose file exists and
refuses a folder written under another configuration, naming the first difference.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from fortify.distributed import DistInfo, barrier, broadcast_object, gather_objects
from fortify.errors import ConfigError
from fortify.fileio import atomic_write, read_json, write_json

UNIT_FORMAT = "fortify-units/1"
DEFAULT_UNIT_SIZE = 64


def unit_slices(n: int, unit_size: int) -> list[slice]:
    """The units of an n-image test set: consecutive slices of `unit_size` (the last may be shorter)."""
    if unit_size < 1:
        raise ConfigError(f"unit size must be >= 1, got {unit_size}")
    return [slice(start, min(start + unit_size, n)) for start in range(0, n, unit_size)]


def assigned_units(n_units: int, rank: int, world_size: int) -> list[int]:
    """Rank r of w computes units r, r + w, r + 2w, ...: every unit once, no padding, no duplicates."""
    return list(range(rank, n_units, world_size))


def unit_seed(seed: int, what: str, unit: int) -> int:
    """The seed of one piece of work ("attack pgd", "curve pgd eps=2/255", ...) on one unit."""
    digest = hashlib.sha256(f"{seed}|{what}|{unit}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@dataclass
class UnitResult:
    """One unit's per-image outcomes (tensors, first dimension = the unit's images, except where named)
    and its counts and seconds (`meta`, JSON-ready)."""

    index: int
    start: int
    stop: int
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def _fingerprint_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [k for k in keys if old.get(k) != new.get(k)]


@dataclass
class UnitStore:
    """The finished units of one evaluation, on disk under `folder` (`<out>/units`)."""

    folder: Path
    fingerprint: dict[str, Any]

    @classmethod
    def open(cls, folder: str | Path, fingerprint: dict[str, Any], *, resume: bool) -> UnitStore:
        """Refuse (ConfigError, nothing written) a folder whose units belong to another configuration;
        without `resume`, refuse one that holds units at all (they would be silently reused)."""
        folder = Path(folder)
        config = folder / "config.json"
        if config.is_file():
            old = read_json(config)
            diffs = _fingerprint_differences(old.get("fingerprint", {}), fingerprint)
            if diffs:
                raise ConfigError(
                    f"{folder} holds units of another evaluation ({diffs[0]} differs: "
                    f"{old.get('fingerprint', {}).get(diffs[0])!r} != {fingerprint.get(diffs[0])!r}); "
                    "use --force to start over or another --out"
                )
            if not resume and any(folder.glob("unit-*.safetensors")):
                raise ConfigError(
                    f"{folder} holds finished units of this evaluation; use --resume to reuse them "
                    "or --force to start over"
                )
        return cls(folder, fingerprint)

    def claim(self) -> None:
        """Write units/config.json (once, atomically) before the first unit."""
        config = self.folder / "config.json"
        if not config.is_file():
            write_json(config, {"format": UNIT_FORMAT, "fingerprint": self.fingerprint})

    def path(self, index: int) -> Path:
        return self.folder / f"unit-{index:05d}.safetensors"

    def load(self, index: int) -> UnitResult | None:
        return self._read(self.path(index))

    def save(self, result: UnitResult) -> None:
        self._write(self.path(result.index), result)

    # Units of another part of the evaluation (e.g. the joint attack's units over patients,
    # fortify.evaluation.patient_run), kept beside the image units under their own file names:
    # `<part>-<index>.safetensors`. `part` names what they depend on beyond the fingerprint.
    def part_path(self, part: str, index: int) -> Path:
        return self.folder / f"{part}-{index:05d}.safetensors"

    def load_part(self, part: str, index: int) -> UnitResult | None:
        return self._read(self.part_path(part, index))

    def save_part(self, part: str, result: UnitResult) -> None:
        self._write(self.part_path(part, result.index), result)

    @staticmethod
    def _read(path: Path) -> UnitResult | None:
        if not path.is_file():
            return None
        with safe_open(str(path), framework="pt") as f:
            header = json.loads(f.metadata()["json"])
            tensors = {name: f.get_tensor(name) for name in f.keys()}
        return UnitResult(header["index"], header["start"], header["stop"], tensors, header["meta"])

    @staticmethod
    def _write(path: Path, result: UnitResult) -> None:
        header = {"index": result.index, "start": result.start, "stop": result.stop, "meta": result.meta}
        tensors = {k: v.contiguous() for k, v in result.tensors.items()}
        atomic_write(path, lambda p: save_file(tensors, str(p), {"json": json.dumps(header)}))


def check_complete(results: dict[int, UnitResult], units: list[slice]) -> None:
    """Every test image exactly once: each unit present, with the boundaries it was planned with."""
    missing = [i for i in range(len(units)) if i not in results]
    if missing:
        raise RuntimeError(f"units missing after the evaluation: {missing[:5]}")
    for i, sl in enumerate(units):
        r = results[i]
        if (r.start, r.stop) != (sl.start, sl.stop):
            raise RuntimeError(f"unit {i} covers [{r.start}, {r.stop}), planned [{sl.start}, {sl.stop})")


def digest(obj: Any) -> str:
    """A short stable hash of a JSON-able object, or of tensors (their bytes): for fingerprints."""
    h = hashlib.sha256()
    items = obj if isinstance(obj, (list, tuple)) else [obj]
    for item in items:
        if isinstance(item, torch.Tensor):
            t = item.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        else:
            h.update(json.dumps(item, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def open_units(
    folder: str | Path | None, fingerprint: dict[str, Any], *, resume: bool, dist
) -> UnitStore | None:
    """The units folder of one piece of work, checked by every process before any work (a refusal is
    raised everywhere), claimed by rank 0. None: keep nothing on disk."""
    if folder is None:
        return None
    store = UnitStore.open(folder, fingerprint, resume=resume)
    barrier(dist)
    if dist.is_main:
        store.claim()
    barrier(dist)
    return store


def compute_units(
    units: list[slice],
    compute: Callable[[int, slice], UnitResult],
    store: UnitStore | None,
    dist: DistInfo,
    *,
    everywhere: bool = False,
) -> tuple[dict[int, UnitResult], int]:
    """Every unit of one piece of work -> ({index: unit}, units reused from the store).

    This process computes (or reuses, when its file exists) units rank, rank + w, ...; rank 0 gathers
    them, keeps a copy of each in its store and checks the set is complete. With `everywhere` every
    process gets the whole set (work that continues from it on every process); else the others get
    ({}, 0)."""
    done: dict[int, UnitResult] = {}
    reused = 0
    for i in assigned_units(len(units), dist.rank, dist.world_size):
        found = store.load(i) if store is not None else None
        if found is not None:
            done[i], reused = found, reused + 1
            continue
        done[i] = compute(i, units[i])
        if store is not None:
            store.save(done[i])
    if dist.enabled:
        parts = gather_objects((done, reused), dist)
        if dist.is_main:
            done, reused = {}, sum(r for _, r in parts)
            for part, _ in parts:
                for i, unit in part.items():
                    if i in done:
                        raise RuntimeError(f"unit {i} was computed by two processes")
                    done[i] = unit
                    if store is not None and not store.path(i).is_file():
                        store.save(unit)
            check_complete(done, units)
        if everywhere:
            done, reused = broadcast_object((done, reused) if dist.is_main else None, dist)
        elif not dist.is_main:
            return {}, 0
    else:
        check_complete(done, units)
    return done, reused


def joined(done: dict[int, UnitResult], names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """The units' tensors joined in unit order (first dimension = the images); {} without units."""
    if not done:
        return {}
    order = [done[i] for i in range(len(done))]
    return {name: torch.cat([u.tensors[name] for u in order]) for name in names or list(order[0].tensors)}
