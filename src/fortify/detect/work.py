"""Where detect's attacks run: work units of images (fortify.evaluation.units), kept on disk, shared out.

Each attack over a set of images (the fit attacks on the sampled training images, FGSM/PGD/CW on the test
images, the adaptive attack on the correctly classified ones) is cut into units of `unit_size` images whose
boundaries depend only on that set. Unit k of "<what>" draws its randomness from unit_seed(seed, what, k),
and its batches are fixed by the unit, so its images are the same whichever process computes them, after
however many interruptions. A finished unit goes atomically to `<out>/units/<model>/<purpose>/`; a resumed
run reuses it and refuses a folder written under another configuration. Under torchrun rank r computes
units r, r + w, ...; every process then gets the whole set (the detector is fitted from the fit attacks and
the adaptive attack starts from PGD's images), and rank 0 alone writes detect.json.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fortify.detect.settings import DetectSettings
from fortify.distributed import DistInfo
from fortify.evaluation.units import (
    UnitResult,
    UnitStore,
    compute_units,
    digest,
    joined,
    open_units,
    unit_slices,
)
from fortify.fileio import read_json, sha256_file
from fortify.runtime import Runtime

PURPOSES = ("fit", "test", "adaptive")  # the sets of images detect attacks, one units folder each


@dataclass
class DetectWork:
    """One model's detect attacks: its units folder (None: nothing kept), the fingerprint every purpose
    shares, this process's place among torchrun's, and how many units each purpose had and reused."""

    folder: Path | None
    base: dict[str, Any]
    unit_size: int
    resume: bool = False
    dist: DistInfo = field(default_factory=DistInfo)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def images(
        self,
        purpose: str,
        specifics: dict[str, Any],
        x: torch.Tensor,
        compute: Callable[[int, slice], dict[str, torch.Tensor]],
    ) -> dict[str, torch.Tensor]:
        """`compute(k, slice)` over the units of the images `x` -> its tensors joined over every image.
        `specifics` (what else the purpose's outcome depends on) join the fingerprint with the images."""
        fingerprint = {**self.base, **specifics, "images": digest(x)}
        folder = None if self.folder is None else self.folder / purpose
        store = open_units(folder, fingerprint, resume=self.resume, dist=self.dist)
        units = unit_slices(len(x), self.unit_size)
        done, reused = compute_units(
            units,
            lambda k, sl: UnitResult(k, sl.start, sl.stop, compute(k, sl)),
            store,
            self.dist,
            everywhere=True,
        )
        self.counts[purpose] = {"count": len(units), "reused": reused}
        return joined(done)

    def check(self) -> None:
        """Refuse, before any work, a units folder of this model written under another configuration (the
        checks each purpose repeats with its images once they are known)."""
        for purpose in PURPOSES if self.folder is not None else ():
            config = self.folder / purpose / "config.json"
            if config.is_file():
                old = read_json(config).get("fingerprint", {})
                UnitStore.open(self.folder / purpose, {**old, **self.base}, resume=self.resume)

    def record(self) -> dict[str, Any]:
        """detect.json's "units" block of one model."""
        return {
            "size": self.unit_size,
            "count": sum(c["count"] for c in self.counts.values()),
            "reused": sum(c["reused"] for c in self.counts.values()),
            "processes": self.dist.world_size,
            "per_purpose": dict(self.counts),
        }


@dataclass(frozen=True)
class UnitsPlace:
    """Where one model's units go (`<out>/units/<model>`), whether finished ones are reused, and this
    process's place among torchrun's."""

    folder: Path
    resume: bool
    dist: DistInfo

    def work(
        self, checkpoint: str | Path, info: dict, settings: DetectSettings, runtime: Runtime
    ) -> DetectWork:
        """The model's DetectWork; its fingerprint holds what every purpose's outcome depends on."""
        base = {
            "checkpoint": info.get("weights_sha256") or sha256_file(checkpoint),
            "seed": settings.seed,
            "unit_size": settings.unit_size,
            "batch_size": settings.batch_size,
            "precision": runtime.precision,
            "device": runtime.device.type,
        }
        work = DetectWork(self.folder, base, settings.unit_size, self.resume, self.dist)
        work.check()
        return work
