"""Validation after every epoch: fresh batch-norm statistics, then clean, PGD and FGSM accuracy.

The numbers are metrics.jsonl's val_* fields, which the best epoch is chosen on (selection.py). Every
rank scores its shard of the validation images and the sums are all-reduced, so all ranks agree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fortify import distributed as ddp
from fortify.attacks import fgsm, pgd
from fortify.runtime import Runtime
from fortify.training.out_of_memory import oom_guard
from fortify.training.splits import even_batches
from fortify.training.training_run import TrainingRun

EVAL_BATCH = 128


@dataclass
class ValidationResult:
    metrics: dict[str, float | None]  # val_loss, val_clean_acc, val_robust_acc, val_fgsm_acc (metrics.jsonl)
    seconds: float


def validate(run: TrainingRun) -> ValidationResult:
    """Fresh batch-norm statistics (when configured), then clean and robust accuracy on the val split."""
    cfg = run.cfg
    t0 = time.perf_counter()
    with oom_guard(cfg, run.runtime):
        if cfg.bn_recalibrate:
            recalibrate_batchnorm(run.kept, run.splits.train_x, runtime=run.runtime, info=run.info)
        metrics = measure_accuracy(
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
    for b in even_batches(idx, batch_size):
        if b.numel() < 2:
            continue
        with runtime.autocast():
            model(runtime.to_device(x[b]))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.train(was_training)


def measure_accuracy(
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
