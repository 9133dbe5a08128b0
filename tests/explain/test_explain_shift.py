"""Attention-shift metrics on hand-made maps whose answers are known, and the bootstrap intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fortify.explain.shift import (
    bootstrap_mean,
    downsample,
    paired_difference,
    rank_correlation,
    shift_metrics,
    top_cells,
    top_overlap,
)


def ramp(n: int = 10) -> np.ndarray:
    return np.arange(n * n, dtype=np.float64).reshape(n, n)


def test_identical_maps_correlate_perfectly_and_overlap_fully():
    a = np.random.default_rng(0).random((12, 12))
    assert rank_correlation(a, a) == pytest.approx(1.0)
    assert top_overlap(a, a) == 1.0


def test_reversed_ranking_gives_minus_one_and_no_overlap():
    a = ramp()
    assert rank_correlation(a, a.max() - a) == pytest.approx(-1.0)
    assert top_overlap(a, a.max() - a) == 0.0
    # Any monotone change of values keeps the ranking: Spearman sees 1, overlap stays full.
    assert rank_correlation(a, np.exp(a / 10)) == pytest.approx(1.0)


def test_partial_overlap_has_the_computed_value():
    # 100 cells, top 10% = 10 cells. Clean: cells 90..99 on top. Adversarial: cells 94..99 stay on top,
    # cells 0..3 are raised above everything -> 6 of the clean top 10 remain.
    clean = ramp().ravel()
    adv = clean.copy()
    adv[:4] = 1000 + np.arange(4)
    assert top_cells(clean.reshape(10, 10)).sum() == 10
    assert top_overlap(clean.reshape(10, 10), adv.reshape(10, 10)) == pytest.approx(0.6)
    # Spearman equals 1 - 6 sum d^2 / (n (n^2 - 1)) with the ranks moved as constructed.
    rank_c = np.argsort(np.argsort(clean))
    rank_a = np.argsort(np.argsort(adv))
    n = clean.size
    expected = 1 - 6 * ((rank_c - rank_a) ** 2).sum() / (n * (n * n - 1))
    assert rank_correlation(clean, adv) == pytest.approx(expected)
    assert 0 < expected < 1


def test_other_fraction_and_ties_at_the_threshold():
    a = ramp()
    assert top_overlap(a, a.max() - a, fraction=0.4) == 0.0
    assert top_overlap(a, np.roll(a.ravel(), 5).reshape(10, 10), fraction=0.2) == pytest.approx(15 / 20)
    tied = np.zeros((10, 10))
    tied[0, :5] = 1.0  # 5 cells above 95 cells tied at 0
    assert top_cells(tied, fraction=0.05).sum() == 5  # k = 5: exactly the raised cells
    assert top_cells(tied, fraction=0.10).sum() == 100  # k = 10 reaches the tie: all tied cells count


def test_constant_maps_are_nan_not_a_number_that_looks_real():
    a = ramp()
    flat = np.ones((10, 10))
    assert math.isnan(rank_correlation(a, flat))
    assert math.isnan(top_overlap(flat, a))


def test_downsample_averages_areas_and_keeps_small_maps():
    maps = np.zeros((1, 64, 64), dtype=np.float32)
    maps[0, :32, :32] = 1.0
    small = downsample(maps, 2)
    assert small.shape == (1, 2, 2)
    np.testing.assert_allclose(small[0], [[1.0, 0.0], [0.0, 0.0]])
    assert downsample(maps, 128) is maps


def test_shift_metrics_per_image():
    a = np.stack([ramp(8), ramp(8), ramp(8)])
    b = np.stack([ramp(8), ramp(8).max() - ramp(8), np.ones((8, 8))])
    rho, ovl = shift_metrics(a, b, grid=8)
    assert rho[0] == pytest.approx(1) and rho[1] == pytest.approx(-1) and math.isnan(rho[2])
    assert ovl[0] == 1 and ovl[1] == 0 and math.isnan(ovl[2])


def test_bootstrap_interval_is_seeded_and_covers_the_mean():
    v = np.random.default_rng(1).normal(0.5, 0.1, size=60)
    s = bootstrap_mean(v, seed=3, n_boot=500)
    assert s["n"] == 60 and s["mean"] == pytest.approx(v.mean())
    assert s["ci"][0] < s["mean"] < s["ci"][1]
    assert s == bootstrap_mean(v, seed=3, n_boot=500)
    # A t-interval and the bootstrap agree roughly on a normal sample.
    half = 1.96 * v.std(ddof=1) / np.sqrt(v.size)
    assert (s["ci"][1] - s["ci"][0]) == pytest.approx(2 * half, rel=0.3)
    assert bootstrap_mean([np.nan, 0.2])["ci"] is None
    assert bootstrap_mean([np.nan])["mean"] is None


def test_paired_difference_uses_only_images_with_both_values():
    a = np.array([0.1, 0.2, np.nan, 0.4, 0.5])
    b = np.array([0.3, 0.5, 0.9, 0.6, np.nan])
    d = paired_difference(a, b, seed=0, n_boot=200)
    assert d["n"] == 3
    assert d["mean"] == pytest.approx(np.mean([0.2, 0.3, 0.2]))
    assert d["ci"][0] > 0
