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

from fortify.detect.batches import Start, attack_images, detector_outputs, features_of, layer_scores_of
from fortify.detect.detector import Detector
from fortify.detect.features import resolve_layers
from fortify.detect.mahalanobis import MahalanobisScore, fit_gaussian, fit_head
from fortify.detect.metrics import threshold_at_fpr
from fortify.detect.settings import DetectSettings
from fortify.detect.work import DetectWork
from fortify.evaluation.units import digest, unit_seed
from fortify.runtime import Runtime, seed_everything

# Per fit attack (its spec): the adversarial images, which of them fool the classifier, their features.
FitAttacks = dict[str, tuple[torch.Tensor, np.ndarray, list[np.ndarray]]]


def _no_bar(_description: str, _total: int) -> Callable[[int], None]:
    return lambda n: None


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
    work: DetectWork | None = None,
) -> Fitted:
    """Gaussians on clean train images, head on train clean vs train adversarial, threshold on val.
    `work`: where the fit attacks run (units kept on disk, torchrun's processes); default: here, kept
    nowhere."""
    s = settings
    work = work or DetectWork(None, {}, s.unit_size)
    score_rt = replace(runtime, precision="fp32")  # every reported score and the threshold in fp32
    layers = resolve_layers(model, model_name, s.layers)
    x_tr, y_tr = train
    labels = y_tr.numpy()
    seconds: dict[str, float] = {}

    t0 = time.perf_counter()
    logits_tr, feats_tr = features_of(model, layers, x_tr, score_rt, s.batch_size)
    gaussians = [fit_gaussian(f, labels, num_classes, s.shrinkage) for f in feats_tr]
    seconds["gaussians"] = time.perf_counter() - t0

    # Adversarial versions of a stratified sample of training images.
    t0 = time.perf_counter()
    rng = np.random.default_rng(s.seed)
    sub = stratified_sample(labels, s.fit_images, rng)
    correct_sub = (logits_tr[sub].argmax(1) == y_tr[sub]).numpy()
    adv = _fit_attacks(model, layers, x_tr[sub], y_tr[sub], correct_sub, s, runtime, score_rt, start, work)
    seconds["fit_attacks"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    fold = rng.permutation(len(x_tr)) % s.cross_fit_folds
    oof = _out_of_fold_scores(
        model, layers, feats_tr, labels, num_classes, fold, sub, x_tr[sub], adv, s, score_rt
    )
    weight, bias, head_info = _fit_head(*oof, adv, len(sub), s)
    score = MahalanobisScore(gaussians)
    score.set_head(weight, bias)
    detector = Detector(model, layers, score, preprocess_eps=s.preprocess_eps).to(runtime.device)
    seconds["head"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    _, val_scores = detector_outputs(detector, val_x, score_rt, s.batch_size)
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
        "head": head_info,
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


def _fit_attacks(
    model: nn.Module,
    layers: list[str],
    x_sub: torch.Tensor,
    y_sub: torch.Tensor,
    correct_sub: np.ndarray,
    s: DetectSettings,
    runtime: Runtime,
    score_rt: Runtime,
    start: Start,
    work: DetectWork,
) -> FitAttacks:
    """Each fit attack at the headline eps on the sampled training images, in work units (each seeded
    from the attack and its index), with its fooling mask (fooled: correct on the clean image, wrong on
    the adversarial one, in fp32) and its features."""
    specs = {str(spec): spec for spec in (t.at_eps(s.eps) for t in s.fit_attacks)}
    bars = {text: start(f"fit: {text}", len(x_sub)) for text in specs}

    def unit(k: int, sl: slice) -> dict[str, torch.Tensor]:
        out = {}
        for text, spec in specs.items():
            seed_everything(unit_seed(s.seed, f"fit {text}", k))
            out[text] = attack_images(spec, model, x_sub[sl], y_sub[sl], runtime, s.batch_size, bars[text])
        return out

    images = work.images("fit", {"attacks": list(specs), "labels": digest(y_sub)}, x_sub, unit)
    adv: FitAttacks = {}
    for text in specs:
        adv_x = images.get(text, x_sub.clone())
        adv_logits, adv_feats = features_of(model, layers, adv_x, score_rt, s.batch_size)
        adv[text] = adv_x, correct_sub & (adv_logits.argmax(1) != y_sub).numpy(), adv_feats
    return adv


def _out_of_fold_scores(
    model: nn.Module,
    layers: list[str],
    feats_tr: list[np.ndarray],
    labels: np.ndarray,
    num_classes: int,
    fold: np.ndarray,
    sub: np.ndarray,
    x_sub: torch.Tensor,
    adv: FitAttacks,
    s: DetectSettings,
    score_rt: Runtime,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per-layer distances of the sampled clean images and of their adversarial versions, each scored by
    Gaussians fitted without the image's fold: (clean (n_sub, layers), {attack: (n_sub, layers)})."""
    bs = s.batch_size
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
    return clean_scores, adv_scores


def _fit_head(
    clean_scores: np.ndarray,
    adv_scores: dict[str, np.ndarray],
    adv: FitAttacks,
    n_sub: int,
    s: DetectSettings,
) -> tuple[np.ndarray, float, dict]:
    """The logistic head on clean (0) vs adversarial (1) distances: (weight, bias, its info block)."""
    fooled_total = sum(int(m.sum()) for _, m, _ in adv.values())
    # Too few fooling examples (a robust model at a small eps): learn from every adversarial example.
    positives_rule = "fooled" if fooled_total >= 5 else "all adversarial (fewer than 5 fooled the model)"
    pos = np.concatenate(
        [adv_scores[k][m if fooled_total >= 5 else np.ones_like(m)] for k, (_, m, _) in adv.items()]
    )
    weight, bias = fit_head(clean_scores, pos)
    info = {
        "kind": "logistic regression (scikit-learn, balanced class weights, C=1)",
        "weight": [float(w) for w in weight],
        "bias": bias,
        "split": "train",
        "n_images": n_sub,
        "n_clean": n_sub,
        "n_adversarial": len(pos),
        "positives": positives_rule,
        "attacks": {k: {"n_fooled": int(m.sum()), "n": len(m)} for k, (_, m, _) in adv.items()},
        "cross_fit_folds": s.cross_fit_folds,
    }
    return weight, bias, info
