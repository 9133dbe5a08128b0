"""`train(cfg)`: the epoch loop shared by every mode, resumable and DDP-aware.

Per epoch: this rank's batches (epoch.py), one pass of training, validation (validation.py), the best
epoch and early stopping (selection.py), metrics.jsonl and checkpoints (saving.py). The run itself is
set up, or restored from last.* on --resume, by run.py.

Determinism: the data order and augmentations come from one generator seeded with cfg.seed
whose state is saved with every `last` checkpoint, and the global RNGs (attack random starts)
are saved too, so a run resumed from epoch k replays exactly what an uninterrupted run would
have done (bit-exact in fp32 on the same machine and thread count).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

from fortify import distributed as ddp
from fortify.progress import Advance, tasks
from fortify.training.config import TrainConfig
from fortify.training.epoch import EpochStats, epoch_batches, train_one_epoch
from fortify.training.run_folder import read_metrics
from fortify.training.saving import epoch_record, open_tensorboard, save_epoch
from fortify.training.selection import update_selection
from fortify.training.training_run import TrainingRun, setup_run
from fortify.training.validation import validate


def train(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    stop_after_epoch: int | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
) -> dict:
    """Train per `cfg` into cfg.out; returns the final summary (best epoch and its val metrics).

    `on_epoch(epoch, seconds)` is called on the main process after each finished epoch (1-based epoch
    number, that epoch's wall seconds including validation): `reproduce` rescales its time budget by it.

    `stop_after_epoch=k` ends the run after epoch k as if it had been killed there (used to test
    that --resume reproduces an uninterrupted run).
    """
    run = setup_run(cfg, resume=resume, force=force, progress=progress)
    writer = open_tensorboard(cfg, run.run_dir) if run.info.is_main else None
    show = progress and run.info.is_main
    log = _log_console(show)
    t_run = time.perf_counter()
    first_epoch = run.state.epoch  # a resumed run's ETA counts only the epochs it has run itself
    with tasks(show, log_lines=False, fields=("stats",)) as start:
        for epoch in range(run.state.epoch, cfg.epochs):
            if run.state.stopped or (stop_after_epoch is not None and epoch >= stop_after_epoch):
                break
            t0 = time.perf_counter()
            batches = epoch_batches(run)
            advance = start(f"epoch {epoch + 1}/{cfg.epochs}", len(batches))
            stats = train_one_epoch(run, epoch, batches, on_batch=_show_batch(advance))
            val = validate(run)
            record = epoch_record(run, epoch, stats, val, time.perf_counter() - t0)
            improved = update_selection(cfg, run.state, record)
            save_epoch(run, record, improved, writer)
            if on_epoch is not None and run.info.is_main:
                on_epoch(epoch + 1, record["epoch_seconds"])
            advance(0, stats=_epoch_text(record))
            if log is not None:  # a log file sees no live bar: one line per epoch instead
                spent = time.perf_counter() - t_run
                left = spent / (epoch + 1 - first_epoch) * (cfg.epochs - epoch - 1)
                log.print(
                    f"epoch {epoch + 1}/{cfg.epochs}: {_epoch_text(record)}  "
                    f"{record['epoch_seconds']:.0f} s, about {left / 60:.1f} min left"
                )
    if writer is not None:
        writer.close()
    return _summary(run, time.perf_counter() - t_run)


def _log_console(enabled: bool):
    """stderr when it is a log file, not a terminal (fortify.progress draws no bar there); else None."""
    if not enabled:
        return None
    from rich.console import Console

    console = Console(stderr=True, soft_wrap=True)  # a log file gets whole lines, not 80 columns
    return None if console.is_terminal else console


def _show_batch(advance: Advance) -> Callable[[EpochStats], None]:
    return lambda stats: advance(1, stats=stats.text())


def _epoch_text(record: dict) -> str:
    text = f"loss {record['loss']:.3f}  val clean {record['val_clean_acc']:.3f}"
    if record["val_robust_acc"] is not None:
        text += f"  val robust {record['val_robust_acc']:.3f}"
    if record.get("val_clean_bal_acc") is not None:
        text += f"  balanced {record['val_clean_bal_acc']:.3f}"
    return text + ("  (best)" if record["best"] else "")


def _summary(run: TrainingRun, seconds: float) -> dict:
    """The run's summary (`fortify train --json`), after checking DDP ranks ended in sync."""
    info, state = run.info, run.state
    in_sync = _params_in_sync(run.model, info, run.runtime.device)
    ddp.shutdown(info)
    metrics = read_metrics(run.run_dir / "metrics.jsonl") if info.is_main else []
    best = next((m for m in metrics if m["epoch"] == state.best_epoch), None)
    return {
        "run_dir": str(run.run_dir),
        "epochs_completed": state.epoch,
        "best_epoch": state.best_epoch,
        "best": best,
        "last": metrics[-1] if metrics else None,
        "selection": run.selection,
        "stopped": state.stopped,
        "catastrophic_overfitting": state.co_detected,
        "co_epochs": state.co_epochs,
        "seconds_this_run": seconds,
        "runtime": run.runtime.describe(),
        "world_size": info.world_size,
        "rank": info.rank,
        "ddp_params_in_sync": in_sync,
    }


def _params_in_sync(model: nn.Module, info: ddp.DistInfo, device: torch.device) -> bool | None:
    """DDP sanity check: every rank ends with rank 0's weights (max abs difference == 0)."""
    if not info.enabled:
        return None
    import torch.distributed as dist

    flat = torch.cat([p.detach().float().flatten() for p in model.parameters()]).to(device)
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    diff = (flat - reference).abs().max()
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return bool(diff.item() == 0)
