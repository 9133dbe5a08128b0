"""Threshold, rates and settings: small pure functions with exact answers."""

from __future__ import annotations

import numpy as np
import pytest

from fortify.detect import DetectSettings, detection_metrics, threshold_at_fpr
from fortify.errors import ConfigError


def test_threshold_flags_at_most_the_target_share_of_clean_scores():
    rng = np.random.default_rng(0)
    for n in (20, 100, 157):
        clean = rng.normal(size=n)
        t = threshold_at_fpr(clean, 0.05)
        assert (clean > t).sum() == int(np.floor(0.05 * n))
    ties = np.r_[np.zeros(95), np.ones(5) * 3.0]
    assert threshold_at_fpr(ties, 0.05) == 0.0 and (ties > 0.0).sum() == 5
    with pytest.raises(ValueError):
        threshold_at_fpr(np.array([]), 0.05)


def test_detection_metrics_count_fooled_examples_only():
    neg = np.arange(10.0)  # clean scores 0..9
    pos = np.array([20.0, 30.0, 5.0])  # three fooling examples, one below the threshold
    m = detection_metrics(neg, pos, threshold=8.5, n_attacked=8, n_boot=200, seed=0)
    assert m["n_fooled"] == 3 and m["n_attacked"] == 8
    assert m["tpr_at_threshold"]["k"] == 2 and m["tpr_at_threshold"]["value"] == pytest.approx(2 / 3)
    assert m["attack_success"]["k"] == 1 and m["attack_success"]["n"] == 8  # fooled and undetected
    assert m["auroc"] == pytest.approx((10 + 10 + 5.5) / 30)  # 5 beats 0..4, ties with 5 (half)
    lo, hi = m["auroc_ci"]
    assert lo <= m["auroc"] <= hi
    lo, hi = m["tpr_at_threshold"]["ci"]
    assert 0 < lo < 2 / 3 < hi <= 1
    empty = detection_metrics(neg, np.array([]), threshold=8.5, n_attacked=8, n_boot=10, seed=0)
    assert empty["auroc"] is None and empty["tpr_at_threshold"]["value"] is None
    assert empty["attack_success"]["value"] == 0.0


def test_settings_round_trip_and_refuse_unknown_keys():
    for preset in (DetectSettings.preset("smoke"), DetectSettings.preset("quick"), DetectSettings()):
        assert DetectSettings.from_dict(preset.to_dict()) == preset
    with pytest.raises(ConfigError, match="valid: seed, models") as e:
        DetectSettings.from_dict({"stepz": 3})
    assert "stepz" in str(e.value) and "\n" not in str(e.value)
    for bad in (
        {"fpr": 0.0},
        {"models": "all"},
        {"shrinkage": 2},
        {"adaptive_lambdas": []},
        {"fit_attacks": ["cw"]},
        {"fit_attacks": ["pgd:stepz=2"]},
        {"adaptive_steps": 0},
    ):
        with pytest.raises(ConfigError):
            DetectSettings.from_dict(bad)


def _block(tpr_k: int, n_fooled: int) -> dict:
    tpr = tpr_k / n_fooled if n_fooled else None
    return {"auroc": 0.7, "tpr_at_threshold": {"value": tpr}, "attack_success": {"value": 0.1}}


@pytest.mark.parametrize(
    ("adaptive", "pgd", "defeated", "text"),
    [
        ((1, 40), (30, 40), True, "detector defeated by an adaptive attack: TPR 2.5%"),
        ((1, 40), (4, 40), True, "already weak without adaptation: non-adaptive PGD TPR 10.0%"),
        ((30, 40), (35, 40), False, "still flags 75.0%"),
        ((0, 0), (0, 0), None, "fooled no correctly classified test image"),
    ],
)
def test_headline_verdict_says_it_plainly(adaptive, pgd, defeated, text):
    from fortify.detect.scoring import headline

    h = headline({"adaptive": _block(*adaptive), "pgd": _block(*pgd)})
    assert h["defeated"] is defeated and text in h["verdict"] and h["attack"] == "adaptive"
