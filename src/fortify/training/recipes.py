"""One optimization step's loss for each training mode.

Attacks see the bare model (never the DDP wrapper): they run per process on the local shard and
switch the model to eval() themselves (the attacks contract). With cfg.craft_bn == "batch" (the
default) they get a `BatchStatsModel` view whose batch-norm layers use the statistics of the
batch being attacked, as in Madry et al.'s and Wong et al.'s reference code, because the running
statistics lag the weights between recalibrations; "running" crafts against the running
statistics (the eval-mode model). Either way the running statistics are left untouched. Clean and
adversarial images are concatenated into ONE forward pass in train mode: batch norm then
normalizes both together and DDP sees exactly one forward per backward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fortify.attacks import fgsm, pgd, trades_kl
from fortify.runtime import Runtime
from fortify.training.awp import perturb_weights
from fortify.training.batchstats import crafting_model
from fortify.training.config import MIXED_ATTACKS, TrainConfig


@dataclass
class StepOutput:
    loss: torch.Tensor
    clean_correct: int | None  # None when the step had no clean forward (pgd, fast)
    adv_correct: int | None  # None for standard
    attack: str | None  # which attack made the adversarial half (mixed rotates)
    # AWP: puts the unperturbed weights back; the caller runs it after backward, before the optimizer step
    restore_weights: Callable[[], None] | None = None


def _alpha(cfg: TrainConfig, eps: float, steps: int) -> float:
    if cfg.attack_alpha is not None:
        return cfg.attack_alpha * (eps / cfg.eps if cfg.eps > 0 else 1.0)  # scales with eps warm-up
    return 2.5 * eps / steps


def make_adversarial(
    mode: str,
    attack_model: nn.Module,
    x,
    y,
    *,
    cfg: TrainConfig,
    eps: float,
    batch_index: int,
    epoch: int,
    runtime: Runtime,
) -> tuple[torch.Tensor, str]:
    """The adversarial batch for `mode` at the current (possibly warmed-up) eps."""
    steps = cfg.attack_steps
    crafter = crafting_model(attack_model, cfg.craft_bn)
    with runtime.autocast():
        if mode in ("pgd", "mart"):  # MART crafts with PGD on cross-entropy too
            return pgd(crafter, x, y, eps=eps, steps=steps, alpha=_alpha(cfg, eps, steps)), "pgd"
        if mode == "fast":
            alpha = 1.25 * eps if cfg.attack_alpha is None else _alpha(cfg, eps, 1)
            return fgsm(crafter, x, y, eps=eps, random_start=True, alpha=alpha), "fgsm-rs"
        if mode == "trades":
            return trades_kl(crafter, x, eps=eps, steps=steps, alpha=_alpha(cfg, eps, steps)), "trades-kl"
        if mode == "mixed":
            # Rotate per batch (offset by epoch) so each epoch with >= 3 batches sees all three attacks.
            name = MIXED_ATTACKS[(batch_index + epoch) % len(MIXED_ATTACKS)]
            if name == "fgsm":
                return fgsm(crafter, x, y, eps=eps), name
            loss = "cw" if name == "cw" else "ce"
            return pgd(crafter, x, y, eps=eps, steps=steps, alpha=_alpha(cfg, eps, steps), loss=loss), name
    raise ValueError(f"mode {mode!r} has no adversarial examples")


def mart_loss(clean: torch.Tensor, adv: torch.Tensor, y: torch.Tensor, *, beta: float) -> torch.Tensor:
    """MART (Wang et al. 2020): boosted CE on the adversarial logits (CE plus a margin term pushing down the
    most likely wrong class) + beta * KL(clean || adv) weighted by 1 - p_y(clean), so misclassified clean
    examples count more. Follows the authors' reference code (constants included)."""
    adv_probs = F.softmax(adv, dim=1)
    top2 = torch.argsort(adv_probs, dim=1)[:, -2:]
    wrong = torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])  # most likely class other than y
    boosted = F.cross_entropy(adv, y) + F.nll_loss(torch.log(1.0001 - adv_probs + 1e-12), wrong)
    clean_probs = F.softmax(clean, dim=1)
    true_probs = clean_probs.gather(1, y.unsqueeze(1)).squeeze(1)
    kl = F.kl_div(torch.log(adv_probs + 1e-12), clean_probs, reduction="none").sum(dim=1)
    return boosted + beta * (kl * (1.0000001 - true_probs)).mean()


def _ce(logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None, cfg: TrainConfig) -> torch.Tensor:
    """Cross-entropy with the run's class weights and label smoothing (0: plain one-hot targets)."""
    return F.cross_entropy(logits, y, weight=weight, label_smoothing=cfg.label_smoothing)


def training_step_loss(
    model: nn.Module,
    attack_model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    cfg: TrainConfig,
    eps: float,
    class_weights: torch.Tensor | None,
    batch_index: int,
    epoch: int,
    runtime: Runtime,
    soft_targets: torch.Tensor | None = None,
) -> StepOutput:
    """Loss for one batch (model in train mode); the caller does backward/step (and `restore_weights`).
    `soft_targets` (mixup, standard mode): probability targets replacing y in the loss."""
    mode = cfg.mode
    n = x.shape[0]
    if mode == "noise":
        # Unclipped, like Cohen et al.'s training: the smoothed classifier classifies x + noise with noise
        # outside [0,1] too, so the base classifier must see the same distribution it is certified under.
        noisy = x + cfg.noise_sigma * torch.randn_like(x)
        with runtime.autocast():
            logits = model(noisy).float()
        loss = _ce(logits, y, class_weights, cfg)
        # No clean forward: the accuracy on the noisy batch goes in the perturbed-input slot.
        return StepOutput(loss, None, int((logits.argmax(1) == y).sum()), "gaussian")
    if mode == "standard" or eps == 0:
        with runtime.autocast():
            logits = model(x).float()
        loss = _ce(logits, y if soft_targets is None else soft_targets, class_weights, cfg)
        correct = int((logits.argmax(1) == y).sum())
        return StepOutput(loss, correct, None if mode == "standard" else correct, None)

    x_adv, attack = make_adversarial(
        mode, attack_model, x, y, cfg=cfg, eps=eps, batch_index=batch_index, epoch=epoch, runtime=runtime
    )

    def adversarial_loss(net: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(loss, clean logits or None, adversarial logits) of this batch through `net`."""
        if mode in ("pgd", "fast"):
            with runtime.autocast():
                adv = net(x_adv).float()
            return _ce(adv, y, class_weights, cfg), None, adv
        with runtime.autocast():
            logits = net(torch.cat([x, x_adv])).float()
        clean, adv = logits[:n], logits[n:]
        if mode == "mart":
            return mart_loss(clean, adv, y, beta=cfg.trades_beta), clean, adv
        if mode == "mixed":
            w = cfg.mixed_clean_weight
            loss = w * _ce(clean, y, class_weights, cfg) + (1 - w) * _ce(adv, y, class_weights, cfg)
            return loss, clean, adv
        # trades
        natural = _ce(clean, y, class_weights, cfg)
        robust = F.kl_div(F.log_softmax(adv, dim=1), F.softmax(clean, dim=1), reduction="batchmean")
        return natural + cfg.trades_beta * robust, clean, adv

    restore = None
    if cfg.awp_gamma > 0:  # probe with frozen running statistics, on the bare model (never through DDP)
        probe = crafting_model(attack_model, "batch")
        restore = perturb_weights(attack_model, lambda: adversarial_loss(probe)[0], cfg.awp_gamma)
    loss, clean, adv = adversarial_loss(model)
    clean_correct = None if clean is None else int((clean.argmax(1) == y).sum())
    return StepOutput(loss, clean_correct, int((adv.argmax(1) == y).sum()), attack, restore)
