"""Attention shift between two maps of the same image, and intervals for their means.

- Rank correlation: Spearman's rho (scipy.stats.spearmanr) over the cells of both maps on a common
  grid (`downsample`: area averaging to at most GRID x GRID cells; a ResNet layer4 CAM at 128 px has
  4x4 cells of its own, so nothing is lost, and spearmanr runs on 1024 values, not 16384).
- Top overlap: the fraction of the clean map's top cells (value >= its (1 - fraction) quantile
  value, ties at the threshold included) that are also top cells of the adversarial map. With
  distinct values both sets hold ceil(fraction * n) cells and IoU = overlap / (2 - overlap).
A constant map ranks nothing: both numbers are NaN for it and it is counted as degenerate.

Intervals are percentile bootstraps over images (seeded): the unit of replication is the image,
never the pixel, so the thousands of cells per map do not shrink the intervals.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

GRID = 32
TOP_FRACTION = 0.10
N_BOOT = 2000
LEVEL = 0.95


def downsample(maps: np.ndarray, grid: int = GRID) -> np.ndarray:
    """N x H x W maps area-averaged to at most grid x grid cells (kept as they are when smaller)."""
    if maps.shape[-1] <= grid and maps.shape[-2] <= grid:
        return maps
    t = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))[:, None]
    size = (min(grid, maps.shape[-2]), min(grid, maps.shape[-1]))
    return F.adaptive_avg_pool2d(t, size)[:, 0].numpy()


def _constant(a: np.ndarray) -> bool:
    return bool(np.ptp(a) == 0)


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho between the cells of two maps; NaN when either map is constant."""
    if _constant(a) or _constant(b):
        return math.nan
    return float(spearmanr(a.ravel(), b.ravel()).statistic)


def top_cells(a: np.ndarray, fraction: float = TOP_FRACTION) -> np.ndarray:
    """Boolean mask of the cells at or above the k-th largest value, k = ceil(fraction * n)."""
    flat = a.ravel()
    k = max(1, math.ceil(fraction * flat.size))
    threshold = np.partition(flat, flat.size - k)[flat.size - k]
    return (flat >= threshold).reshape(a.shape)


def top_overlap(clean: np.ndarray, adv: np.ndarray, fraction: float = TOP_FRACTION) -> float:
    """Share of the clean map's top cells that are top cells of the adversarial map too."""
    if _constant(clean) or _constant(adv):
        return math.nan
    top_clean, top_adv = top_cells(clean, fraction), top_cells(adv, fraction)
    return float((top_clean & top_adv).sum() / top_clean.sum())


def shift_metrics(clean: np.ndarray, adv: np.ndarray, *, grid: int = GRID, fraction: float = TOP_FRACTION):
    """Per image (rank correlation, top overlap) for N x H x W clean and adversarial maps."""
    c, a = downsample(clean, grid), downsample(adv, grid)
    rho = np.array([rank_correlation(ci, ai) for ci, ai in zip(c, a, strict=True)], dtype=np.float64)
    ovl = np.array([top_overlap(ci, ai, fraction) for ci, ai in zip(c, a, strict=True)], dtype=np.float64)
    return rho, ovl


def bootstrap_mean(values, *, seed: int = 0, n_boot: int = N_BOOT, level: float = LEVEL) -> dict:
    """Mean of the finite values with a percentile-bootstrap interval over them (None below 2)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    out: dict = {"mean": float(v.mean()) if v.size else None, "ci": None, "n": int(v.size)}
    if v.size >= 2:
        rng = np.random.default_rng(seed)
        means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
        alpha = (1 - level) / 2
        out["ci"] = [float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))]
    return out


def paired_difference(a, b, *, seed: int = 0, n_boot: int = N_BOOT, level: float = LEVEL) -> dict:
    """Mean of b - a over the images where both are finite, with its bootstrap interval."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    both = np.isfinite(a) & np.isfinite(b)
    return bootstrap_mean(b[both] - a[both], seed=seed, n_boot=n_boot, level=level)
