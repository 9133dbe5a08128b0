"""What `reproduce` is made of: a `Stage` (one resumable step), the `RunPlan` every stage shares, and
`At` (where a stage works: the run, its study root, the model or extra it concerns)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fortify.attacks import AttackSpec
from fortify.evaluation.settings import EvalSettings
from fortify.fileio import sha256_file
from fortify.pipeline.estimate import (
    MachineSpeed,
)
from fortify.pipeline.fingerprint import data_identity
from fortify.pipeline.profiles import Profile
from fortify.runtime import Runtime

if TYPE_CHECKING:
    from fortify.training import TrainConfig


def _keep_outputs(at: At) -> None:
    return None


def _one_second(at: At, speed: MachineSpeed) -> float:
    return 1.0


@dataclass
class Stage:
    """One resumable step of the run: what it writes, what it depends on, and the top-level functions
    that do its work, each called with `at` (where it works)."""

    name: str  # "normal/eval"
    title: str
    record: Path
    outputs: list[Path]
    config: dict[str, Any]
    at: At
    action: Callable[[At], None]
    find_inputs: Callable[
        [At], dict[str, str]
    ]  # evaluated when the stage is reached (earlier stages made them)
    remove: Callable[[At], None] = _keep_outputs  # remove stale outputs before a rerun
    kind: str = "other"  # "train" | "eval" | "other": stages of one kind share the estimate's correction
    # under torchrun every process runs it (its share of the work units), not rank 0 alone; train and eval
    # stages always do (reproduce.DISTRIBUTED_KINDS)
    distributed: bool = False
    # each config key's default, so a record from before a key existed still matches (fingerprint.py)
    defaults: dict[str, Any] = field(default_factory=dict)
    # inputs this stage once had and has dropped, so records from then still match (fingerprint.py)
    retired_inputs: tuple[str, ...] = ()
    retired_config: tuple[str, ...] = ()  # likewise for config keys
    estimate: Callable[[At, MachineSpeed], float] = _one_second  # predicted seconds on a measured machine

    def inputs(self) -> dict[str, str]:
        return self.find_inputs(self.at)

    def run(self) -> None:
        self.action(self.at)

    def clean(self) -> None:
        self.remove(self.at)

    def cost(self, speed: MachineSpeed) -> float:
        return self.estimate(self.at, speed)


def sha_or_missing(path: Path) -> str:
    return sha256_file(path) if path.is_file() else "missing"


def rmtree_if_dir(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)


@dataclass
class RunPlan:
    """Everything the stage builders share: the resolved settings of one `reproduce` call."""

    prof: Profile
    data: str
    defense: str
    device: str
    precision: str
    runtime: Runtime
    out: Path
    progress: bool
    specs: list[AttackSpec]
    transfer_attack: AttackSpec
    data_id: dict[str, str]
    sizes: tuple[int, int, int] = (0, 0, 0)  # expected train / val / test images (for the time budget)
    extras: dict[str, Any] = field(default_factory=dict)  # extra stage name -> its resolved settings
    # set by _run_stages while a training stage runs: (epoch, seconds, epochs) after each epoch
    on_epoch: Callable[[int, float, int], None] | None = None

    def data_inputs(self) -> dict[str, str]:
        if "data" not in self.data_id:
            self.data_id["data"] = data_identity(self.data)
        return dict(self.data_id)

    def eval_settings(self) -> EvalSettings:
        """What each model's evaluation runs: the profile's settings with the attacks resolved."""
        return replace(self.prof.evaluate, attacks=self.specs)

    def eval_record(self) -> dict[str, Any]:
        """The evaluation stages' recorded config (their fingerprint hashes it): attacks as text."""
        ev = self.prof.evaluate
        return {
            "attacks": [str(s) for s in self.specs],
            "eps": ev.eps,
            "eps_curve": list(ev.eps_curve),
            "curve_attacks": [str(t) for t in ev.curve_attacks],
            "batch_size": ev.batch_size,
            "limit": ev.limit,
            "examples_per_class": ev.examples_per_class,
            "seed": ev.seed,
            "sanity_steps_factor": ev.sanity_steps_factor,
            "sanity_restarts": ev.sanity_restarts,
            "score_precision": ev.score_precision,
            "fold_bn": ev.fold_bn,
            "curve_cumulative": ev.curve_cumulative,
            "unit_size": ev.unit_size,
        }

    def transfer_settings(self) -> EvalSettings:
        return replace(self.prof.evaluate, transfer_attack=self.transfer_attack)

    def transfer_record(self) -> dict[str, Any]:
        """The transfer stage's recorded config (also written into transfer.json)."""
        ev = self.prof.evaluate
        return {
            "attack": str(self.transfer_attack),
            "batch_size": ev.batch_size,
            "limit": ev.limit,
            "seed": ev.seed,
        }


@dataclass(frozen=True)
class At:
    """Where a stage works: the run, its study root (RUN_DIR, or RUN_DIR/fold-<i> with --folds) and, for
    per-model and extra stages, the model or extra it concerns."""

    run: RunPlan
    root: Path
    name: str = ""  # "normal" | "adversarial" | an extra's name
    train_cfg: TrainConfig | None = None  # training stages: the resolved, validated config
    folds: int = 0  # the folds and cv stages

    @property
    def split(self) -> Path:
        return self.root / "split.json"
