"""One epoch of training: this rank's batches of a fresh permutation, then per batch augment, the mode's
loss (recipes.py), backward, optimizer and schedule step, and the weight average when there is one.

The permutation and the augmentations are drawn from the run's data generator (saved with last.*), so a
resumed run trains on exactly the batches an uninterrupted one would have.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn

from fortify import distributed as ddp
from fortify.training.augment import augment_batch, mixup_batch
from fortify.training.config import TrainConfig
from fortify.training.out_of_memory import oom_guard
from fortify.training.recipes import StepOutput, training_step_loss
from fortify.training.splits import even_batches
from fortify.training.training_run import TrainingRun


@dataclass
class EpochStats:
    """One epoch of training: sums over its batches (over every rank after `all_reduced`), its last eps."""

    loss: float = 0.0  # sum of batch loss x batch size
    clean_correct: float = 0.0
    clean_n: float = 0.0  # images in batches with a clean forward
    adv_correct: float = 0.0
    adv_n: float = 0.0  # images in batches with an adversarial forward
    n: float = 0.0
    eps: float = 0.0  # the (warmed-up) eps of the epoch's last batch
    seconds: float = 0.0

    SUMS = ("loss", "clean_correct", "clean_n", "adv_correct", "adv_n", "n")

    def add(self, out: StepOutput, n: int) -> None:
        self.loss += float(out.loss.detach()) * n
        self.n += n
        if out.clean_correct is not None:
            self.clean_correct += out.clean_correct
            self.clean_n += n
        if out.adv_correct is not None:
            self.adv_correct += out.adv_correct
            self.adv_n += n

    def all_reduced(self, info: ddp.DistInfo, device: torch.device) -> EpochStats:
        sums = ddp.all_reduce_sum([getattr(self, k) for k in self.SUMS], info, device)
        return replace(self, **dict(zip(self.SUMS, sums, strict=True)))

    def text(self) -> str:
        text = f"loss {self.loss / max(self.n, 1.0):.3f}"
        if self.clean_n:
            text += f"  clean {self.clean_correct / self.clean_n:.3f}"
        if self.adv_n:
            text += f"  adv {self.adv_correct / self.adv_n:.3f}"
        return text


def epoch_batches(run: TrainingRun) -> list[torch.Tensor]:
    """This rank's batches of a fresh permutation (drawn from the run's data generator).

    With balanced_sampling the epoch (same length) is drawn with replacement, each image with
    probability 1 / (K * its class's count): every class is drawn equally often in expectation, so the
    ~11% benign class is seen about 3x as often, repeated rather than weighted up in the loss."""
    y = run.splits.train_y
    if run.cfg.balanced_sampling:
        counts = torch.bincount(y, minlength=len(run.splits.classes)).double()
        order = torch.multinomial(1.0 / counts[y], y.numel(), replacement=True, generator=run.data_gen)
    else:
        order = torch.randperm(y.numel(), generator=run.data_gen)
    return even_batches(ddp.shard_indices(order, run.info), run.per_rank_batch)


def train_one_epoch(
    run: TrainingRun,
    epoch: int,
    batches: list[torch.Tensor],
    *,
    on_batch: Callable[[EpochStats], None] | None = None,
) -> EpochStats:
    """One pass over `batches` (augment, the mode's loss, optimizer and schedule step per batch)."""
    cfg, runtime, splits = run.cfg, run.runtime, run.splits
    t0 = time.perf_counter()
    stats = EpochStats()
    run.model.train()
    with oom_guard(cfg, runtime):
        for b, idx in enumerate(batches):
            xb, yb, soft = splits.train_x[idx], splits.train_y[idx], None
            if cfg.augment:
                xb = augment_batch(
                    xb,
                    run.data_gen,
                    max_shift=cfg.max_shift,
                    intensity=cfg.intensity_jitter,
                    max_rotation=cfg.max_rotation,
                    max_zoom=cfg.max_zoom,
                )
            if cfg.mixup_alpha > 0:  # train accuracy then counts each mixed image's own label (yb)
                xb, soft = mixup_batch(xb, yb, len(splits.classes), run.data_gen, alpha=cfg.mixup_alpha)
                soft = soft.to(runtime.device)
            xb, yb = runtime.to_device(xb), yb.to(runtime.device)
            stats.eps = eps_at(cfg, epoch * run.steps_per_epoch + b, run.steps_per_epoch)
            out = training_step_loss(
                run.net,
                run.model,
                xb,
                yb,
                cfg=cfg,
                eps=stats.eps,
                class_weights=run.class_weights,
                batch_index=b,
                epoch=epoch,
                runtime=runtime,
                soft_targets=soft,
            )
            run.optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            if out.restore_weights is not None:  # AWP: the step applies to the unperturbed weights
                out.restore_weights()
            run.optimizer.step()
            run.scheduler.step()
            if run.ema is not None:
                update_ema(run.ema, run.model, cfg.ema_decay)
            stats.add(out, yb.numel())
            if on_batch is not None:
                on_batch(stats)
    stats.seconds = time.perf_counter() - t0
    return stats.all_reduced(run.info, runtime.device)


def eps_at(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The training eps at global step `step`: linear warm-up over cfg.eps_warmup_epochs, then cfg.eps."""
    if not cfg.adversarial:
        return 0.0
    warm = cfg.eps_warmup_epochs * steps_per_epoch
    return cfg.eps if warm <= 0 else cfg.eps * min(1.0, (step + 1) / warm)


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model for parameters; buffers (batch-norm statistics, counters)
    are copied, and validation re-estimates the statistics for the averaged weights anyway."""
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p.detach(), 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers(), strict=True):
        e.copy_(b)
