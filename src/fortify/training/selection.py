"""Which epoch is best, when to stop early, and fast mode's catastrophic-overfitting guard.

`LoopState` is this bookkeeping, carried from epoch to epoch and saved in last.state.pt, so a resumed
run keeps choosing exactly as an uninterrupted one would.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from fortify.training.config import TrainConfig

# Catastrophic overfitting (fast mode): PGD val accuracy falls this far below its best so far
# while FGSM accuracy stays this far above PGD accuracy (Wong et al. 2020, Sec. 5).
CO_PGD_DROP = 0.2
CO_FGSM_GAP = 0.3


class CatastrophicOverfittingWarning(UserWarning):
    pass


@dataclass
class LoopState:
    """The epoch loop's own state: saved in last.state.pt (as a plain dict) and restored by --resume."""

    epoch: int = 0  # epochs completed
    best_score: list[float] | None = None  # `selection_score` of the best epoch so far
    best_epoch: int = 0
    since_best: int = 0  # epochs without a better score (early stopping)
    co_detected: bool = False  # fast mode: catastrophic overfitting seen
    co_epochs: list[int] = field(default_factory=list)
    best_pgd_batch_acc: float = 0.0  # best validation PGD accuracy so far (the CO guard's reference)
    stopped: str | None = None  # why the run ended before cfg.epochs, once it has


def selection_fields(cfg: TrainConfig) -> list[str]:
    """metrics.jsonl fields the best epoch is chosen on, most important first: robust accuracy first for
    adversarial modes (Rice et al. 2020); balanced accuracies when cfg.select_on == "balanced"."""
    if cfg.select_on == "last":  # no selection: the epoch number always grows, so each epoch is best.*
        return ["epoch"]
    suffix = "_bal_acc" if cfg.select_on == "balanced" else "_acc"
    if cfg.robust_validation and cfg.adversarial:
        return [f"val_robust{suffix}", f"val_clean{suffix}"]
    return [f"val_clean{suffix}"]


def selection_score(cfg: TrainConfig, m: dict) -> list[float]:
    """Higher is better; ties go to the lower validation loss."""
    return [*(m[f] for f in selection_fields(cfg)), -m["val_loss"]]


def update_selection(cfg: TrainConfig, state: LoopState, record: dict) -> bool:
    """Overfitting guard, best epoch, early stopping: updates `state` and marks record["best"];
    returns whether this epoch is the best so far."""
    check_catastrophic_overfitting(cfg, record, state)
    score = selection_score(cfg, record)
    improved = state.best_score is None or score > state.best_score
    if improved:
        state.best_score, state.best_epoch, state.since_best = score, record["epoch"], 0
    else:
        state.since_best += 1
    record["best"] = improved
    state.epoch = record["epoch"]
    if cfg.patience is not None and state.since_best >= cfg.patience:
        state.stopped = f"early stop: no better {selection_fields(cfg)[0]} for {cfg.patience} epochs"
    if record.get("catastrophic_overfitting") and cfg.co_action == "stop":
        state.stopped = "catastrophic overfitting (fast mode); best checkpoint kept"
    return improved


def check_catastrophic_overfitting(cfg: TrainConfig, record: dict, state: LoopState) -> None:
    """Fast mode: PGD val accuracy collapsing while FGSM val accuracy stays high is the CO signature."""
    if cfg.mode != "fast" or record.get("val_robust_acc") is None:
        return
    pgd_acc, fgsm_acc = record["val_robust_acc"], record["val_fgsm_acc"]
    best = state.best_pgd_batch_acc
    detected = best - pgd_acc >= CO_PGD_DROP and fgsm_acc - pgd_acc >= CO_FGSM_GAP
    record["catastrophic_overfitting"] = detected
    state.best_pgd_batch_acc = max(best, pgd_acc)
    if detected:
        state.co_detected = True
        state.co_epochs = [*state.co_epochs, record["epoch"]]
        warnings.warn(
            f"catastrophic overfitting at epoch {record['epoch']}: val PGD acc {pgd_acc:.3f} "
            f"(best {best:.3f}) while FGSM acc {fgsm_acc:.3f}; the best checkpoint predates it",
            CatastrophicOverfittingWarning,
            stacklevel=2,
        )
