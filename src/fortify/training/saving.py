"""What each epoch leaves in the run dir: its metrics.jsonl line, best.* when it is the best so far,
last.* with everything --resume needs, and TensorBoard scalars. Only rank 0 writes."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from fortify import distributed as ddp
from fortify.errors import ConfigError
from fortify.fileio import append_jsonl
from fortify.training.checkpoints import rng_state, save_checkpoint
from fortify.training.config import TrainConfig
from fortify.training.epoch import EpochStats
from fortify.training.training_run import TrainingRun
from fortify.training.validation import ValidationResult


def epoch_record(
    run: TrainingRun, epoch: int, stats: EpochStats, val: ValidationResult, seconds: float
) -> dict:
    """The epoch's metrics.jsonl line (also the checkpoints' "metrics")."""
    record = {
        "epoch": epoch + 1,
        "loss": stats.loss / max(stats.n, 1.0),
        "train_clean_acc": stats.clean_correct / stats.clean_n if stats.clean_n else None,
        "train_adv_acc": stats.adv_correct / stats.adv_n if stats.adv_n else None,
        **val.metrics,
        "lr": run.scheduler.get_last_lr()[0],
        "eps": stats.eps,
        "train_seconds": stats.seconds,
        "val_seconds": val.seconds,
        "epoch_seconds": seconds,
    }
    record["train_acc"] = record["train_clean_acc"] if stats.clean_n else record["train_adv_acc"]
    return record


def save_epoch(run: TrainingRun, record: dict, improved: bool, writer) -> None:
    """metrics.jsonl, best.* (when improved) and last.* with everything --resume needs; rank 0 writes."""
    rank_rng = _gather_rng(run.info)
    if run.info.is_main:
        epoch = record["epoch"]
        append_jsonl(run.run_dir / "metrics.jsonl", record)
        ckpt_info = {**run.checkpoint_info, "epoch": epoch, "metrics": record}
        if improved:
            save_checkpoint(run.run_dir / "best", run.kept, ckpt_info, rng=False)
        extra = {"data_generator": run.data_gen.get_state(), "loop": asdict(run.state)}
        if run.ema is not None:
            extra["trained_weights"] = {k: v.detach().cpu() for k, v in run.model.state_dict().items()}
        if rank_rng is not None:
            extra["rank_rng"] = rank_rng
        save_checkpoint(
            run.run_dir / "last",
            run.kept,
            {**ckpt_info, "best_epoch": run.state.best_epoch},
            optimizer=run.optimizer,
            scheduler=run.scheduler,
            extra_state=extra,
        )
        if writer is not None:
            for k, v in record.items():
                if isinstance(v, float):
                    writer.add_scalar(k, v, epoch)
    ddp.barrier(run.info)


def open_tensorboard(cfg: TrainConfig, run_dir: Path):
    """A SummaryWriter into RUN_DIR/tb when cfg.tensorboard, else None."""
    if not cfg.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ConfigError("tensorboard logging needs the 'tensorboard' package (not installed)") from e
    return SummaryWriter(str(run_dir / "tb"))


def _gather_rng(info: ddp.DistInfo):
    """Each rank's RNG state, collected on rank 0 so a DDP resume restores all of them."""
    if not info.enabled:
        return None
    import torch.distributed as dist

    gathered = [None] * info.world_size
    dist.all_gather_object(gathered, rng_state())
    return gathered
