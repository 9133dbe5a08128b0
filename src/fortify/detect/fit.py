"""Fitting the detector on the TRAINING split and setting its threshold on the VALIDATION split.

1. Features of every clean training image -> class means and tied shrunk covariance per layer.
2. A class-stratified sample of training images is attacked (FGSM, PGD at the headline eps); the
   logistic head learns clean (0) vs adversarial examples that fool the classifier (1).
   Cross-fitting: the distances it learns from are out-of-fold (each image scored by Gaussians
   fitted without its fold). In-sample distances of training images are too small (512 dims,
   738 images), and a head fitted on them would weight layers by how much they overfit.
3. Threshold: the detector logit that flags `fpr` of the clean validation images. No test image
   is used anywhere in this file.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from fortify.attacks import parse_spec, run_attack
from fortify.detect.detector import Detector
from fortify.detect.features import resolve_layers
from fortify.detect.mahalanobis import MahalanobisScore, fit_gaussian, fit_head
from fortify.detect.metrics import threshold_at_fpr
from fortify.detect.settings import DetectSettings, spec_with_eps
from fortify.runtime import Runtime, seed_everything

Start = Callable[[str, int], Callable[[int], None]]


def _no_bar(_description: str, _total: int) -> Callable[[int], None]:
    return lambda n: None


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
    spec_text: str,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    runtime: Runtime,
    batch_size: int,
    seed: int,
    advance: Callable[[int], None] | None = None,
) -> torch.Tensor:
    spec = parse_spec(spec_text)
    seed_everything(seed)
    out = []
    for sl in chunks(len(x), batch_size):
        with runtime.autocast():
            adv = run_attack(spec, model, runtime.to_device(x[sl]), y[sl].to(runtime.device))
        out.append(adv.detach().float().cpu())
        if advance:
            advance(sl.stop - sl.start)
    return torch.cat(out) if out else x.clone()


def stratified_sample(labels: np.ndarray, k: int | None, rng: np.random.Generator) -> np.ndarray:
    """k indices drawn at random, round-robin over classes so every class keeps its share (sorted)."""
    n = len(labels)
    if k is None or k >= n:
        return np.arange(n)
    pools = [list(rng.permutation(np.flatnonzero(labels == c))) for c in np.unique(labels)]
    picks: list[int] = []
    while len(picks) < k:
        for pool in pools:
            if pool and len(picks) < k:
                picks.append(int(pool.pop()))
    return np.sort(np.asarray(picks))


def _scores(scorer: MahalanobisScore, feats: list[np.ndarray]) -> np.ndarray:
    return scorer.layer_scores([torch.as_tensor(f, dtype=torch.float32) for f in feats]).double().numpy()


@dataclass
class Fitted:
    detector: Detector
    info: dict  # JSON-ready description of the fit (counts, shrinkage, head, threshold, seconds)


def fit_detector(
    model: nn.Module,
    model_name: str | None,
    train: tuple[torch.Tensor, torch.Tensor],
    val_x: torch.Tensor,
    *,
    num_classes: int,
    settings: DetectSettings,
    runtime: Runtime,
    start: Start = _no_bar,
) -> Fitted:
    """Gaussians on clean train images, head on train clean vs train adversarial, threshold on val."""
    s = settings
    bs = s.batch_size
    score_rt = replace(runtime, precision="fp32")  # every reported score and the threshold in fp32
    layers = resolve_layers(model, model_name, s.layers)
    x_tr, y_tr = train
    labels = y_tr.numpy()
    seconds: dict[str, float] = {}

    t0 = time.perf_counter()
    logits_tr, feats_tr = features_of(model, layers, x_tr, score_rt, bs)
    gaussians = [fit_gaussian(f, labels, num_classes, s.shrinkage) for f in feats_tr]
    seconds["gaussians"] = time.perf_counter() - t0

    # Adversarial versions of a stratified sample of training images.
    t0 = time.perf_counter()
    rng = np.random.default_rng(s.seed)
    sub = stratified_sample(labels, s.fit_images, rng)
    x_sub, y_sub = x_tr[sub], y_tr[sub]
    correct_sub = (logits_tr[sub].argmax(1) == y_sub).numpy()
    adv: dict[str, tuple[torch.Tensor, np.ndarray, list[np.ndarray]]] = {}
    for i, template in enumerate(s.fit_attacks):
        text = spec_with_eps(template, s.eps)
        adv_x = attack_images(
            text, model, x_sub, y_sub, runtime, bs, s.seed + i, start(f"fit: {text}", len(sub))
        )
        adv_logits, adv_feats = features_of(model, layers, adv_x, score_rt, bs)
        adv[text] = adv_x, correct_sub & (adv_logits.argmax(1) != y_sub).numpy(), adv_feats
    seconds["fit_attacks"] = time.perf_counter() - t0

    # Out-of-fold distances for the head.
    t0 = time.perf_counter()
    fold = rng.permutation(len(x_tr)) % s.cross_fit_folds
    clean_scores = np.zeros((len(sub), len(layers)))
    adv_scores = {k: np.zeros((len(sub), len(layers))) for k in adv}
    for k in range(s.cross_fit_folds):
        keep = fold != k
        scorer = MahalanobisScore(
            [fit_gaussian(f[keep], labels[keep], num_classes, s.shrinkage) for f in feats_tr]
        )
        rows = np.flatnonzero(fold[sub] == k)
        if len(rows) == 0:
            continue
        if s.preprocess_eps > 0:  # preprocessing depends on the Gaussians: score the images themselves
            det = Detector(model, layers, scorer, preprocess_eps=s.preprocess_eps).to(score_rt.device)
            clean_scores[rows] = layer_scores_of(det, x_sub[rows], score_rt, bs)
            for key, (adv_x, _, _) in adv.items():
                adv_scores[key][rows] = layer_scores_of(det, adv_x[rows], score_rt, bs)
            continue
        with torch.no_grad():
            clean_scores[rows] = _scores(scorer, [f[sub[rows]] for f in feats_tr])
            for key, (_, _, adv_feats) in adv.items():
                adv_scores[key][rows] = _scores(scorer, [f[rows] for f in adv_feats])
    fooled_total = sum(int(m.sum()) for _, m, _ in adv.values())
    # Too few fooling examples (a robust model at a small eps): learn from every adversarial example.
    positives_rule = "fooled" if fooled_total >= 5 else "all adversarial (fewer than 5 fooled the model)"
    pos = np.concatenate(
        [adv_scores[k][m if fooled_total >= 5 else np.ones_like(m)] for k, (_, m, _) in adv.items()]
    )
    weight, bias = fit_head(clean_scores, pos)
    score = MahalanobisScore(gaussians)
    score.set_head(weight, bias)
    detector = Detector(model, layers, score, preprocess_eps=s.preprocess_eps).to(runtime.device)
    seconds["head"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    _, val_scores = detector_outputs(detector, val_x, score_rt, bs)
    detector.threshold = threshold_at_fpr(val_scores.numpy(), s.fpr)
    seconds["threshold"] = time.perf_counter() - t0

    info = {
        "layers": [
            {"name": n, "dim": int(f.shape[1]), "shrinkage": g.shrinkage}
            for n, f, g in zip(layers, feats_tr, gaussians, strict=True)
        ],
        "score": "per layer: Mahalanobis distance to the nearest class mean; logistic head on the distances",
        "shrinkage": s.shrinkage,
        "preprocess_eps": s.preprocess_eps,
        "gaussians": {"split": "train", "n": len(x_tr), "images": "clean"},
        "head": {
            "kind": "logistic regression (scikit-learn, balanced class weights, C=1)",
            "weight": [float(w) for w in weight],
            "bias": bias,
            "split": "train",
            "n_images": len(sub),
            "n_clean": len(sub),
            "n_adversarial": len(pos),
            "positives": positives_rule,
            "attacks": {k: {"n_fooled": int(m.sum()), "n": len(m)} for k, (_, m, _) in adv.items()},
            "cross_fit_folds": s.cross_fit_folds,
        },
        "threshold": {
            "value": detector.threshold,
            "split": "val",
            "n": len(val_x),
            "target_fpr": s.fpr,
            "val_fpr": float((val_scores.numpy() > detector.threshold).mean()),
            "rule": "flag when detector logit > threshold",
        },
        "seconds": seconds,
    }
    return Fitted(detector, info)
