"""`train(cfg)`: the epoch loop shared by every mode, resumable and DDP-aware.

Determinism: the data order and augmentations come from one generator seeded with cfg.seed
whose state is saved with every `last` checkpoint, and the global RNGs (attack random starts)
are saved too, so a run resumed from epoch k replays exactly what an uninterrupted run would
have done (bit-exact in fp32 on the same machine and thread count).
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fortify import data as data_api
from fortify.attacks import fgsm, pgd
from fortify.errors import CheckpointError, ConfigError, FortifyError
from fortify.fileio import append_jsonl, sha256_file
from fortify.models import build_model
from fortify.runtime import Runtime, seed_everything
from fortify.training import distributed as ddp
from fortify.training.augment import augment_batch, mixup_batch
from fortify.training.checkpoints import (
    load_training_state,
    read_checkpoint_info,
    save_checkpoint,
    set_rng_state,
)
from fortify.training.config import TrainConfig
from fortify.training.recipes import StepOutput, training_step_loss
from fortify.training.rundir import prepare_run_dir, read_metrics, truncate_metrics

EVAL_BATCH = 128
# Catastrophic overfitting (fast mode): PGD val accuracy falls this far below its best so far
# while FGSM accuracy stays this far above PGD accuracy (Wong et al. 2020, Sec. 5).
CO_PGD_DROP = 0.2
CO_FGSM_GAP = 0.3


class CatastrophicOverfittingWarning(UserWarning):
    pass


@dataclass
class Splits:
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    classes: list[str]
    manifest: Path
    synthetic: bool
    root: str | None


def _load_data(cfg: TrainConfig, run_dir: Path, info: ddp.DistInfo, progress: bool) -> Splits:
    given = cfg.split == "given"  # the dataset's own train/val/test folders, made into RUN_DIR/split.json
    if cfg.split is not None and not given:
        manifest = Path(cfg.split)
        if not manifest.is_file():
            raise ConfigError(f"split manifest not found: {manifest}")
    else:
        manifest = run_dir / "split.json"
        if info.is_main and not manifest.is_file():
            split = data_api.make_split(
                cfg.data,
                image_size=cfg.image_size,
                cache_dir=cfg.cache_dir,
                progress=progress,
                **({"grouping": "given"} if given else {}),
            )
            data_api.save_manifest(split, manifest)
        ddp.barrier(info)
    splits = data_api.load_split(
        manifest,
        cfg.data,
        image_size=cfg.image_size,
        limit_per_class=cfg.limit_per_class,
        cache_dir=cfg.cache_dir,
        progress=progress and info.is_main,
    )
    train, val = splits["train"], splits["val"]
    if len(train) < 2 or len(val) < 1:
        raise ConfigError(f"split {manifest} leaves {len(train)} training and {len(val)} validation images")
    tx, ty = train.tensors()
    vx, vy = val.tensors()
    return Splits(tx, ty, vx, vy, list(train.classes), manifest, bool(train.synthetic), train.root)


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


def _class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    counts = torch.bincount(labels, minlength=num_classes).float()
    weights = labels.numel() / (num_classes * counts.clamp(min=1))
    return torch.where(counts > 0, weights, torch.ones_like(weights))


def _batches(indices: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Near-equal batches (sizes differ by <= 1): no sample dropped, no 1-sample batch for batch norm."""
    n_batches = max(1, math.ceil(indices.numel() / batch_size))
    return [b for b in torch.tensor_split(indices, n_batches) if b.numel() > 0]


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module, x: torch.Tensor, *, runtime: Runtime, info: ddp.DistInfo, batch_size: int = EVAL_BATCH
) -> None:
    """Recompute batch-norm running statistics as exact averages over clean training images.

    Why: with ~24 optimizer steps per epoch, the running statistics (an exponential average with
    momentum 0.1) lag far behind weights that move quickly at a high learning rate. On IQ-OTH/NCCD the
    eval-mode model then collapses to the majority class (val accuracy 0.58) although the same
    weights classify well with fresh statistics (0.86). Re-estimating them before every validation
    ("precise BN") makes model selection and the saved checkpoints use statistics that match the
    weights. Deterministic (no augmentation, fixed order), so resumed runs stay bit-identical.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    was_training = model.training
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
    model.train()
    idx = torch.arange(x.shape[0])[info.rank :: info.world_size]
    for b in _batches(idx, batch_size):
        if b.numel() < 2:
            continue
        with runtime.autocast():
            model(runtime.to_device(x[b]))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.train(was_training)


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    runtime: Runtime,
    info: ddp.DistInfo,
    eps: float,
    steps: int,
    robust: bool,
    fgsm_too: bool,
    seed: int,
    num_classes: int | None = None,
) -> dict[str, float | None]:
    """Clean loss/accuracy and (optionally) PGD / FGSM accuracy on this rank's shard, summed over ranks.

    Returns metrics.jsonl's validation fields (val_loss, val_clean_acc, val_robust_acc, val_fgsm_acc,
    and the balanced accuracies val_clean_bal_acc, val_robust_bal_acc: mean recall over the classes
    present in y; num_classes defaults to max(y) + 1)."""
    was_training = model.training
    model.eval()
    k = num_classes if num_classes is not None else int(y.max()) + 1 if y.numel() else 1
    idx = torch.arange(x.shape[0])[info.rank :: info.world_size]
    gen = torch.Generator().manual_seed(seed)  # same PGD starts every epoch: comparable val numbers
    loss = clean = rob = fg = n = 0.0  # sums over this rank's images
    per_class = torch.zeros(3, k, dtype=torch.float64)  # images, clean correct, robust correct per class
    for b in idx.split(EVAL_BATCH):
        xb, yb = runtime.to_device(x[b]), y[b].to(runtime.device)
        with torch.no_grad(), runtime.autocast():
            logits = model(xb).float()
        loss += float(F.cross_entropy(logits, yb, reduction="sum"))
        ok = logits.argmax(1) == yb
        clean += float(ok.sum())
        n += b.numel()
        per_class[0] += torch.bincount(y[b], minlength=k).double()
        per_class[1] += torch.bincount(y[b][ok.cpu()], minlength=k).double()
        if robust:
            with runtime.autocast():
                x_adv = pgd(model, xb, yb, eps=eps, steps=steps, early_stop=True, generator=gen)
            with torch.no_grad(), runtime.autocast():
                ok = model(x_adv).argmax(1) == yb
            rob += float(ok.sum())
            per_class[2] += torch.bincount(y[b][ok.cpu()], minlength=k).double()
        if fgsm_too:
            with runtime.autocast():
                x_adv = fgsm(model, xb, yb, eps=eps)
            with torch.no_grad(), runtime.autocast():
                fg += float((model(x_adv).argmax(1) == yb).sum())
    model.train(was_training)
    sums = ddp.all_reduce_sum([loss, clean, rob, fg, n, *per_class.flatten().tolist()], info, runtime.device)
    loss, clean, rob, fg, n = sums[:5]
    per_class = torch.tensor(sums[5:], dtype=torch.float64).view(3, k)
    n = max(n, 1.0)
    present = per_class[0] > 0
    recalls = per_class[1:, present] / per_class[0, present]  # clean and robust recall per present class
    bal = recalls.mean(1).tolist() if bool(present.any()) else [0.0, 0.0]
    return {
        "val_loss": loss / n,
        "val_clean_acc": clean / n,
        "val_robust_acc": rob / n if robust else None,
        "val_fgsm_acc": fg / n if fgsm_too else None,
        "val_clean_bal_acc": bal[0],
        "val_robust_bal_acc": bal[1] if robust else None,
    }


def _selection_fields(cfg: TrainConfig) -> list[str]:
    """metrics.jsonl fields the best epoch is chosen on, most important first: robust accuracy first for
    adversarial modes (Rice et al. 2020); balanced accuracies when cfg.select_on == "balanced"."""
    if cfg.select_on == "last":  # no selection: the epoch number always grows, so each epoch is best.*
        return ["epoch"]
    suffix = "_bal_acc" if cfg.select_on == "balanced" else "_acc"
    if cfg.robust_validation and cfg.adversarial:
        return [f"val_robust{suffix}", f"val_clean{suffix}"]
    return [f"val_clean{suffix}"]


def _selection_score(cfg: TrainConfig, m: dict) -> list[float]:
    """Higher is better; ties go to the lower validation loss."""
    return [*(m[f] for f in _selection_fields(cfg)), -m["val_loss"]]


def _eps_at(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    if not cfg.adversarial:
        return 0.0
    warm = cfg.eps_warmup_epochs * steps_per_epoch
    return cfg.eps if warm <= 0 else cfg.eps * min(1.0, (step + 1) / warm)


def _is_oom(e: BaseException) -> bool:
    text = str(e).lower()
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text


def _raise_if_oom(e: BaseException, cfg: TrainConfig, runtime: Runtime) -> None:
    if _is_oom(e):
        raise ConfigError(
            f"batch size {cfg.batch_size} does not fit in memory on {runtime.device}; "
            "lower --batch-size (the run dir keeps the last completed epoch)"
        ) from None


@contextmanager
def _oom_guard(cfg: TrainConfig, runtime: Runtime):
    try:
        yield
    except RuntimeError as e:
        _raise_if_oom(e, cfg, runtime)
        raise


def _progress_bar(enabled: bool):
    if not enabled:
        return nullcontext(None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True, soft_wrap=True)  # a log file gets whole lines, not 80 columns
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[stats]}"),
        transient=False,
        console=console,
        disable=not console.is_terminal,  # logs get one plain line per epoch instead (see the loop)
    )


def _tensorboard(cfg: TrainConfig, run_dir: Path):
    if not cfg.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ConfigError("tensorboard logging needs the 'tensorboard' package (not installed)") from e
    return SummaryWriter(str(run_dir / "tb"))


@dataclass
class LoopState:
    """The epoch loop's own state: saved in last.state.pt (as a plain dict) and restored by --resume."""

    epoch: int = 0  # epochs completed
    best_score: list[float] | None = None  # `_selection_score` of the best epoch so far
    best_epoch: int = 0
    since_best: int = 0  # epochs without a better score (early stopping)
    co_detected: bool = False  # fast mode: catastrophic overfitting seen
    co_epochs: list[int] = field(default_factory=list)
    best_pgd_batch_acc: float = 0.0  # best validation PGD accuracy so far (the CO guard's reference)
    stopped: str | None = None  # why the run ended before cfg.epochs, once it has


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


@dataclass
class ValidationResult:
    metrics: dict[str, float | None]  # val_loss, val_clean_acc, val_robust_acc, val_fgsm_acc (metrics.jsonl)
    seconds: float


@dataclass
class TrainingRun:
    """Everything a run carries from epoch to epoch, built once by `_setup`."""

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
    run = _setup(cfg, resume=resume, force=force, progress=progress)
    writer = _tensorboard(cfg, run.run_dir) if run.info.is_main else None
    t_run = time.perf_counter()
    first_epoch = run.state.epoch  # a resumed run's ETA counts only the epochs it has run itself
    with _progress_bar(progress and run.info.is_main) as bar:
        for epoch in range(run.state.epoch, cfg.epochs):
            if run.state.stopped or (stop_after_epoch is not None and epoch >= stop_after_epoch):
                break
            t0 = time.perf_counter()
            batches = _epoch_batches(run)
            task = (
                bar.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=len(batches), stats="") if bar else None
            )
            stats = train_one_epoch(run, epoch, batches, on_batch=_bar_advance(bar, task))
            val = validate(run)
            record = _epoch_record(run, epoch, stats, val, time.perf_counter() - t0)
            improved = _update_selection(run, record)
            _save_epoch(run, record, improved, writer)
            if on_epoch is not None and run.info.is_main:
                on_epoch(epoch + 1, record["epoch_seconds"])
            if bar:
                bar.update(task, stats=_epoch_stats(record))
                if not bar.console.is_terminal:
                    # A log file sees no live bar (rich draws it only at the end): one line per epoch instead.
                    spent = time.perf_counter() - t_run
                    left = spent / (epoch + 1 - first_epoch) * (cfg.epochs - epoch - 1)
                    bar.console.print(
                        f"epoch {epoch + 1}/{cfg.epochs}: {_epoch_stats(record)}  "
                        f"{record['epoch_seconds']:.0f} s, about {left / 60:.1f} min left"
                    )
    if writer is not None:
        writer.close()
    return _summary(run, time.perf_counter() - t_run)


def _bar_advance(bar, task) -> Callable[[EpochStats], None] | None:
    if bar is None:
        return None
    return lambda stats: bar.update(task, advance=1, stats=stats.text())


def _setup(cfg: TrainConfig, *, resume: bool, force: bool, progress: bool) -> TrainingRun:
    """Validate, join the process group, claim the run dir, load data and build model, optimizer and
    schedule; restore all of them from last.* when resuming."""
    cfg.validate()
    info = ddp.init_distributed(cfg.device)
    device = cfg.device
    if info.enabled and torch.cuda.is_available() and device in ("auto", "cuda"):
        device = f"cuda:{info.local_rank}"
    runtime = Runtime.resolve(device, cfg.precision)
    run_dir = Path(cfg.out)

    error: FortifyError | None = None
    resuming = False
    if info.is_main:
        try:
            resuming = prepare_run_dir(run_dir, cfg, resume=resume, force=force)
        except FortifyError as e:
            error = e
    error, resuming = ddp.broadcast_object((error, resuming), info)  # every rank fails the same way
    if error is not None:
        raise error

    seed_everything(cfg.seed + info.rank)  # ranks draw different attack noise
    data_gen = torch.Generator().manual_seed(cfg.seed)  # same permutation on every rank
    splits = _load_data(cfg, run_dir, info, progress)
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
    steps_per_epoch = len(_batches(torch.arange(shard_size), per_rank_batch))
    scheduler = _scheduler(cfg, optimizer, cfg.epochs * steps_per_epoch)
    class_weights = (
        _class_weights(splits.train_y, num_classes).to(runtime.device) if cfg.class_balanced else None
    )
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
        class_weights=class_weights,
        per_rank_batch=per_rank_batch,
        steps_per_epoch=steps_per_epoch,
        checkpoint_info=_checkpoint_info(cfg, splits, runtime, info),
        ema=copy.deepcopy(model).requires_grad_(False) if cfg.ema_decay is not None else None,
    )
    if resuming:
        run.state = _restore(run)
    if info.enabled:
        run.net = nn.parallel.DistributedDataParallel(
            model, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None
        )
    return run


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
        "selection": _selection_fields(cfg)[0],
    }


@torch.no_grad()
def _update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model for parameters; buffers (batch-norm statistics, counters)
    are copied, and validation re-estimates the statistics for the averaged weights anyway."""
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p.detach(), 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers(), strict=True):
        e.copy_(b)


def _restore(run: TrainingRun) -> LoopState:
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


def _epoch_batches(run: TrainingRun) -> list[torch.Tensor]:
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
    return _batches(ddp.shard_indices(order, run.info), run.per_rank_batch)


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
    try:
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
            stats.eps = _eps_at(cfg, epoch * run.steps_per_epoch + b, run.steps_per_epoch)
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
                _update_ema(run.ema, run.model, cfg.ema_decay)
            stats.add(out, yb.numel())
            if on_batch is not None:
                on_batch(stats)
    except RuntimeError as e:
        _raise_if_oom(e, cfg, runtime)
        raise
    stats.seconds = time.perf_counter() - t0
    return stats.all_reduced(run.info, runtime.device)


def validate(run: TrainingRun) -> ValidationResult:
    """Fresh batch-norm statistics (when configured), then clean and robust accuracy on the val split."""
    cfg = run.cfg
    t0 = time.perf_counter()
    with _oom_guard(cfg, run.runtime):
        if cfg.bn_recalibrate:
            recalibrate_batchnorm(run.kept, run.splits.train_x, runtime=run.runtime, info=run.info)
        metrics = evaluate(
            run.kept,
            run.splits.val_x,
            run.splits.val_y,
            runtime=run.runtime,
            info=run.info,
            eps=cfg.eps,
            steps=cfg.val_attack_steps,
            robust=cfg.robust_validation,
            fgsm_too=cfg.mode == "fast",
            seed=cfg.seed + 1,
            num_classes=len(run.splits.classes),
        )
    return ValidationResult(metrics, time.perf_counter() - t0)


def _epoch_record(
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


def _update_selection(run: TrainingRun, record: dict) -> bool:
    """Overfitting guard, best epoch, early stopping: updates run.state and marks record["best"];
    returns whether this epoch is the best so far."""
    cfg, state = run.cfg, run.state
    _check_catastrophic_overfitting(cfg, record, state)
    score = _selection_score(cfg, record)
    improved = state.best_score is None or score > state.best_score
    if improved:
        state.best_score, state.best_epoch, state.since_best = score, record["epoch"], 0
    else:
        state.since_best += 1
    record["best"] = improved
    state.epoch = record["epoch"]
    if cfg.patience is not None and state.since_best >= cfg.patience:
        state.stopped = f"early stop: no better {run.selection} for {cfg.patience} epochs"
    if record.get("catastrophic_overfitting") and cfg.co_action == "stop":
        state.stopped = "catastrophic overfitting (fast mode); best checkpoint kept"
    return improved


def _save_epoch(run: TrainingRun, record: dict, improved: bool, writer) -> None:
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


def _epoch_stats(record: dict) -> str:
    text = f"loss {record['loss']:.3f}  val clean {record['val_clean_acc']:.3f}"
    if record["val_robust_acc"] is not None:
        text += f"  val robust {record['val_robust_acc']:.3f}"
    if record.get("val_clean_bal_acc") is not None:
        text += f"  balanced {record['val_clean_bal_acc']:.3f}"
    return text + ("  (best)" if record["best"] else "")


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


def _gather_rng(info: ddp.DistInfo):
    """Each rank's RNG state, collected on rank 0 so a DDP resume restores all of them."""
    if not info.enabled:
        return None
    from fortify.training.checkpoints import rng_state

    gathered = [None] * info.world_size
    import torch.distributed as dist

    dist.all_gather_object(gathered, rng_state())
    return gathered


def _check_catastrophic_overfitting(cfg: TrainConfig, record: dict, state: LoopState) -> None:
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
