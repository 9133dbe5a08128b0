"""A training run's setup: `TrainingRun` holds everything carried from epoch to epoch.

`setup_run` validates the config, joins the DDP process group, claims the run dir, loads the data and
builds model, optimizer and schedule; on --resume `restore_run` puts back all of them from last.* so the
next epoch is exactly the one an uninterrupted run would have trained.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from torch import nn

from fortify import distributed as ddp
from fortify.errors import CheckpointError, FortifyError
from fortify.fileio import sha256_file
from fortify.models import build_model
from fortify.runtime import Runtime, seed_everything
from fortify.training.checkpoints import load_training_state, read_checkpoint_info, set_rng_state
from fortify.training.config import TrainConfig
from fortify.training.run_folder import prepare_run_dir, truncate_metrics
from fortify.training.selection import LoopState, selection_fields
from fortify.training.splits import Splits, class_weights, even_batches, load_splits


@dataclass
class TrainingRun:
    """Everything a run carries from epoch to epoch, built once by `setup_run`."""

    cfg: TrainConfig
    info: ddp.DistInfo
    runtime: Runtime
    run_dir: Path
    splits: Splits
    model: nn.Module
    net: nn.Module  # the model, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    data_gen: torch.Generator  # data order and augmentation (saved with every `last` checkpoint)
    class_weights: torch.Tensor | None
    per_rank_batch: int
    steps_per_epoch: int
    checkpoint_info: dict  # what every checkpoint's JSON says about the run
    state: LoopState = field(default_factory=LoopState)
    ema: nn.Module | None = None  # cfg.ema_decay: the weight average that is validated and saved

    @property
    def kept(self) -> nn.Module:
        """The model that is validated and written to best.*/last.*: the EMA when there is one."""
        return self.ema if self.ema is not None else self.model

    @property
    def selection(self) -> str:
        return self.checkpoint_info["selection"]


def setup_run(cfg: TrainConfig, *, resume: bool, force: bool, progress: bool) -> TrainingRun:
    """Validate, join the process group, claim the run dir, load data and build model, optimizer and
    schedule; restore all of them from last.* when resuming."""
    cfg.validate()
    info = ddp.init_distributed(cfg.device)
    device = cfg.device
    if info.enabled and torch.cuda.is_available() and device in ("auto", "cuda"):
        device = f"cuda:{info.local_rank}"
    runtime = Runtime.resolve(device, cfg.precision)
    run_dir = Path(cfg.out)
    resuming = _claim_run_dir(run_dir, cfg, info, resume=resume, force=force)

    seed_everything(cfg.seed + info.rank)  # ranks draw different attack noise
    data_gen = torch.Generator().manual_seed(cfg.seed)  # same permutation on every rank
    splits = load_splits(cfg, run_dir, info, progress)
    num_classes = len(splits.classes)
    model = runtime.prepare_model(
        build_model(
            cfg.model, num_classes, in_channels=1, pretrained=cfg.pretrained, weights_file=cfg.weights
        )
    )
    if cfg.init is not None and not resuming:
        _load_init(model, cfg, splits.classes)
    optimizer = _optimizer(cfg, model)
    shard_size = ddp.shard_indices(torch.arange(splits.train_x.shape[0]), info).numel()
    per_rank_batch = max(2, cfg.batch_size // info.world_size)
    steps_per_epoch = len(even_batches(torch.arange(shard_size), per_rank_batch))
    scheduler = _scheduler(cfg, optimizer, cfg.epochs * steps_per_epoch)
    weights = class_weights(splits.train_y, num_classes).to(runtime.device) if cfg.class_balanced else None
    run = TrainingRun(
        cfg=cfg,
        info=info,
        runtime=runtime,
        run_dir=run_dir,
        splits=splits,
        model=model,
        net=model,
        optimizer=optimizer,
        scheduler=scheduler,
        data_gen=data_gen,
        class_weights=weights,
        per_rank_batch=per_rank_batch,
        steps_per_epoch=steps_per_epoch,
        checkpoint_info=_checkpoint_info(cfg, splits, runtime, info),
        ema=copy.deepcopy(model).requires_grad_(False) if cfg.ema_decay is not None else None,
    )
    if resuming:
        run.state = restore_run(run)
    if info.enabled:
        run.net = nn.parallel.DistributedDataParallel(
            model, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None
        )
    return run


def _claim_run_dir(run_dir: Path, cfg: TrainConfig, info: ddp.DistInfo, *, resume: bool, force: bool) -> bool:
    """Rank 0 prepares the run dir (refusing a foreign or finished one); returns whether it resumes.
    Its verdict is broadcast, so every rank fails the same way or goes on the same way."""
    error: FortifyError | None = None
    resuming = False
    if info.is_main:
        try:
            resuming = prepare_run_dir(run_dir, cfg, resume=resume, force=force)
        except FortifyError as e:
            error = e
    error, resuming = ddp.broadcast_object((error, resuming), info)
    if error is not None:
        raise error
    return resuming


def restore_run(run: TrainingRun) -> LoopState:
    """--resume: weights, optimizer, schedule, data order and RNGs from last.*; metrics.jsonl cut back to
    the last saved epoch. Returns the loop's state at that epoch."""
    cfg, info, run_dir = run.cfg, run.info, run.run_dir
    last = read_checkpoint_info(run_dir / "last.safetensors")
    if last["model"] != cfg.model or list(last["classes"]) != run.splits.classes:
        raise CheckpointError(
            f"{run_dir}/last.json is for {last['model']} on classes {last['classes']}, "
            f"not {cfg.model} on {run.splits.classes}"
        )
    from safetensors.torch import load_file

    saved = load_training_state(run_dir / "last.state.pt")
    run.kept.load_state_dict(load_file(str(run_dir / "last.safetensors")))
    if run.ema is not None:  # last.safetensors holds the average; the trained weights ride in the state
        run.model.load_state_dict(saved["extra"]["trained_weights"])
    run.optimizer.load_state_dict(saved["optimizer"])
    run.scheduler.load_state_dict(saved["scheduler"])
    extra = saved["extra"]
    run.data_gen.set_state(extra["data_generator"])
    rank_rng = extra.get("rank_rng")
    same_world = rank_rng is not None and len(rank_rng) == info.world_size
    set_rng_state(rank_rng[info.rank] if same_world else saved["rng"])  # other world size: not bit-exact
    known = {f.name for f in fields(LoopState)}
    state = LoopState(**{k: v for k, v in extra["loop"].items() if k in known})
    if info.is_main:
        truncate_metrics(run_dir / "metrics.jsonl", state.epoch)
    return state


def _optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    # No weight decay on batch-norm and bias parameters (standard for ResNets).
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)


def _scheduler(cfg: TrainConfig, optimizer, total_steps: int):
    if cfg.schedule == "onecycle" and total_steps >= 4:
        # 25% warm-up, but at least 2 steps: OneCycleLR divides by the warm-up length.
        pct = min(0.5, max(0.25, 2 / total_steps))
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=cfg.lr, total_steps=total_steps, pct_start=pct
        )
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def _load_init(model: nn.Module, cfg: TrainConfig, classes: list[str]) -> None:
    """Start from another run's checkpoint; it must be the same architecture on the same classes."""
    from safetensors.torch import load_file

    init = read_checkpoint_info(cfg.init)
    if init["model"] != cfg.model or list(init["classes"]) != classes or int(init["in_channels"]) != 1:
        raise CheckpointError(
            f"--init checkpoint is {init['model']} on classes {init['classes']}, not {cfg.model} on {classes}"
        )
    if int(init["image_size"]) != cfg.image_size:
        raise CheckpointError(
            f"--init checkpoint was trained at {init['image_size']} px, not {cfg.image_size}"
        )
    path = Path(cfg.init)
    path = path / "best.safetensors" if path.is_dir() else path.with_suffix(".safetensors")
    model.load_state_dict(load_file(str(path)))


def _checkpoint_info(cfg: TrainConfig, splits: Splits, runtime: Runtime, info: ddp.DistInfo) -> dict:
    return {
        "model": cfg.model,
        "num_classes": len(splits.classes),
        "in_channels": 1,
        "image_size": cfg.image_size,
        "classes": splits.classes,
        "mode": cfg.mode,
        "eps": cfg.eps,
        "config": cfg.to_dict(),
        "split": {
            "manifest": str(splits.manifest.resolve()),
            "sha256": sha256_file(splits.manifest),
            "in_run_dir": cfg.split is None or cfg.split == "given",
        },
        "dataset": {"root": splits.root, "synthetic": splits.synthetic},
        "runtime": runtime.describe(),
        "world_size": info.world_size,
        "selection": selection_fields(cfg)[0],
    }
