"""Detection metrics: threshold at a false-positive rate, AUROC with a bootstrap interval, TPR with
a Wilson interval, ROC points for the figures."""

from __future__ import annotations

import math

import numpy as np

from fortify.intervals import interval_or_none


def threshold_at_fpr(clean_scores: np.ndarray, fpr: float) -> float:
    """The smallest threshold t with at most floor(fpr * n) clean scores above it (flag: score > t).

    Pass clean scores of images the detector was not fitted on (validation): training images sit
    closer to the class means they defined, so a threshold from them would flag too many clean
    test images."""
    s = np.sort(np.asarray(clean_scores, dtype=np.float64))[::-1]
    if len(s) == 0:
        raise ValueError("no clean scores to set a threshold on")
    return float(s[min(int(math.floor(fpr * len(s))), len(s) - 1)])


def auroc(neg: np.ndarray, pos: np.ndarray) -> float | None:
    """scikit-learn ROC AUC of positives (adversarial) over negatives (clean); None if a side is empty."""
    from sklearn.metrics import roc_auc_score

    if len(neg) == 0 or len(pos) == 0:
        return None
    labels = np.r_[np.zeros(len(neg)), np.ones(len(pos))]
    return float(roc_auc_score(labels, np.r_[neg, pos]))


def auroc_interval(
    neg: np.ndarray, pos: np.ndarray, n_boot: int, seed: int, level: float = 0.95
) -> list[float] | None:
    """Percentile bootstrap, clean and adversarial resampled separately (their counts are fixed by design)."""
    if n_boot <= 0 or len(neg) < 2 or len(pos) < 2:
        return None
    rng = np.random.default_rng(seed)
    values = [auroc(rng.choice(neg, len(neg)), rng.choice(pos, len(pos))) for _ in range(n_boot)]
    lo, hi = np.quantile(np.asarray(values, dtype=np.float64), [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]


def roc_points(neg: np.ndarray, pos: np.ndarray, max_points: int = 200) -> dict[str, list[float]] | None:
    from sklearn.metrics import roc_curve

    if len(neg) == 0 or len(pos) == 0:
        return None
    fpr, tpr, _ = roc_curve(np.r_[np.zeros(len(neg)), np.ones(len(pos))], np.r_[neg, pos])
    if len(fpr) > max_points:
        keep = np.unique(np.linspace(0, len(fpr) - 1, max_points).round().astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return {"fpr": [round(float(v), 5) for v in fpr], "tpr": [round(float(v), 5) for v in tpr]}


def rate(k: int, n: int) -> dict:
    """{"value", "k", "n", "ci"} with the Wilson 95% interval; value None when n == 0."""
    return {"value": (k / n) if n else None, "k": int(k), "n": int(n), "ci": interval_or_none(int(k), int(n))}


def detection_metrics(
    neg: np.ndarray, pos: np.ndarray, threshold: float, n_attacked: int, *, n_boot: int, seed: int
) -> dict:
    """Everything the report shows for one attack. `pos` holds the detector scores of adversarial
    examples that fool the classifier (only those count), `n_attacked` the correctly classified
    clean images they came from, so attack success = fooled and not flagged, over n_attacked."""
    neg, pos = np.asarray(neg, dtype=np.float64), np.asarray(pos, dtype=np.float64)
    detected = int((pos > threshold).sum())
    return {
        "n_clean": len(neg),
        "n_attacked": int(n_attacked),
        "n_fooled": len(pos),
        "fooled_rate": rate(len(pos), n_attacked),
        "auroc": auroc(neg, pos),
        "auroc_ci": auroc_interval(neg, pos, n_boot, seed),
        "tpr_at_threshold": rate(detected, len(pos)),
        "attack_success": rate(len(pos) - detected, n_attacked),
        "roc": roc_points(neg, pos),
        "scores": [round(float(v), 5) for v in pos],
    }
