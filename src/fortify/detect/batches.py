"""Batched passes over images for the detection stage: features, detector outputs, per-layer scores, and
attacks, each in chunks of `batch_size` on the runtime's device, results as CPU float tensors or arrays."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from fortify.attacks import AttackSpec, run_attack
from fortify.detect.detector import Detector
from fortify.detect.mahalanobis import MahalanobisScore
from fortify.runtime import Runtime

# A progress task's starter: (description, total) -> advance(n images done).
Start = Callable[[str, int], Callable[[int], None]]


def chunks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


@torch.no_grad()
def features_of(
    model: nn.Module, layers: list[str], x: torch.Tensor, runtime: Runtime, batch_size: int
) -> tuple[torch.Tensor, list[np.ndarray]]:
    """(logits float32 CPU, per-layer pooled features as float64 arrays) for every image."""
    probe = Detector(model, layers, MahalanobisScore([]))
    logits, feats = [], [[] for _ in layers]
    model.eval()
    for sl in chunks(len(x), batch_size):
        with runtime.autocast():
            out, fs = probe.features(runtime.to_device(x[sl]))
        logits.append(out.float().cpu())
        for acc, f in zip(feats, fs, strict=True):
            acc.append(f.double().cpu().numpy())
    return torch.cat(logits), [np.concatenate(a) for a in feats]


def detector_outputs(
    detector: Detector, x: torch.Tensor, runtime: Runtime, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, detector logit), float32 CPU; gradients only when preprocessing needs them."""
    logits, scores = [], []
    detector.eval()
    for sl in chunks(len(x), batch_size):
        with torch.set_grad_enabled(detector.preprocess_eps > 0), runtime.autocast():
            out, d = detector(runtime.to_device(x[sl]))
        logits.append(out.detach().float().cpu())
        scores.append(d.detach().float().cpu())
    return torch.cat(logits), torch.cat(scores)


def layer_scores_of(detector: Detector, x: torch.Tensor, runtime: Runtime, batch_size: int) -> np.ndarray:
    out = []
    for sl in chunks(len(x), batch_size):
        with torch.set_grad_enabled(detector.preprocess_eps > 0), runtime.autocast():
            out.append(detector.layer_scores(runtime.to_device(x[sl]))[1].detach().double().cpu().numpy())
    return np.concatenate(out)


def attack_images(
    spec: AttackSpec,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    runtime: Runtime,
    batch_size: int,
    advance: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """`spec` over the images in batches; the caller seeds (one work unit at a time, detect.work)."""
    out = []
    for sl in chunks(len(x), batch_size):
        with runtime.autocast():
            adv = run_attack(spec, model, runtime.to_device(x[sl]), y[sl].to(runtime.device))
        out.append(adv.detach().float().cpu())
        if advance:
            advance(sl.stop - sl.start)
    return torch.cat(out) if out else x.clone()
