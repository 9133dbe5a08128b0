"""Metrics against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from fortify.evaluation.metrics import (
    classification_metrics,
    confusion_matrix,
    perturbation_norms,
    perturbation_stats,
    success_rate,
    worst_case_predictions,
)

CLASSES = ["benign", "malignant", "normal"]


def test_confusion_and_per_class_rates_match_hand_computation():
    # true:  b b b m m m m n n n
    # pred:  b m b m m n m n b n
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
    preds = torch.tensor([0, 1, 0, 1, 1, 2, 1, 2, 0, 2])
    cm = confusion_matrix(labels, preds, 3)
    assert cm.tolist() == [[2, 1, 0], [0, 3, 1], [1, 0, 2]]
    m = classification_metrics(labels, preds, CLASSES)
    assert m["n"] == 10 and m["correct"] == 7 and m["accuracy"] == pytest.approx(0.7)
    b, mal, nor = (m["per_class"][c] for c in CLASSES)
    # benign: TP 2, FN 1, FP 1 (a normal called benign), TN 6
    assert b["sensitivity"] == pytest.approx(2 / 3) and b["specificity"] == pytest.approx(6 / 7)
    assert b["precision"] == pytest.approx(2 / 3) and b["support"] == 3
    # malignant: TP 3, FN 1, FP 1, TN 5
    assert mal["sensitivity"] == pytest.approx(3 / 4) and mal["specificity"] == pytest.approx(5 / 6)
    assert mal["precision"] == pytest.approx(3 / 4)
    # normal: TP 2, FN 1, FP 1 (a malignant called normal), TN 6
    assert nor["sensitivity"] == pytest.approx(2 / 3) and nor["specificity"] == pytest.approx(6 / 7)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 3 / 4 + 2 / 3) / 3)


def test_undefined_rates_are_none_not_zero():
    m = classification_metrics(torch.tensor([0, 0]), torch.tensor([0, 0]), CLASSES)
    assert m["per_class"]["malignant"]["sensitivity"] is None
    assert m["per_class"]["malignant"]["precision"] is None
    assert m["per_class"]["malignant"]["specificity"] == 1.0
    assert m["balanced_accuracy"] == 1.0  # mean over classes present only


def test_perturbation_stats_use_successful_examples_only():
    x = torch.zeros(4, 1, 2, 2)
    x_adv = x.clone()
    x_adv[0, 0, 0, 0] = 0.1  # l2 0.1, linf 0.1
    x_adv[1] = 0.05  # l2 0.1, linf 0.05
    x_adv[2, 0, 0, 0] = 0.3  # l2 0.3
    x_adv[3] = 0.5  # not successful: excluded
    l2, linf = perturbation_norms(x, x_adv)
    assert l2.tolist() == pytest.approx([0.1, 0.1, 0.3, 1.0])
    stats = perturbation_stats(l2, linf, torch.tensor([True, True, True, False]))
    assert stats["l2_median"] == pytest.approx(0.1) and stats["l2_mean"] == pytest.approx(0.5 / 3)
    assert stats["linf_median"] == pytest.approx(0.1) and stats["n_successful"] == 3
    two = perturbation_stats(l2, linf, torch.tensor([True, False, True, False]))
    assert two["l2_median"] == pytest.approx(0.2)  # midpoint of 0.1 and 0.3
    none = perturbation_stats(l2, linf, torch.zeros(4, dtype=torch.bool))
    assert none["l2_median"] is None and none["n_successful"] == 0


def test_success_rate_ignores_clean_mistakes():
    labels = torch.tensor([0, 1, 2, 0])
    clean = torch.tensor([0, 1, 0, 0])  # third already wrong
    adv = torch.tensor([1, 1, 1, 2])  # first and fourth fooled, third was wrong anyway
    assert success_rate(labels, clean, adv) == pytest.approx(2 / 3)
    assert success_rate(labels, torch.tensor([1, 0, 0, 1]), adv) is None


def test_worst_case_counts_any_fooling_and_keeps_the_harmful_mistake():
    labels = torch.tensor([0, 1, 1, 2, 1])
    clean = torch.tensor([1, 1, 1, 2, 1])  # image 0 wrong clean: not robust
    a = torch.tensor([0, 0, 1, 2, 1])  # image 1 -> benign
    b = torch.tensor([0, 2, 1, 2, 0])  # image 1 -> normal too; image 4 -> benign
    worst = worst_case_predictions(labels, clean, [a, b], harmful=(1, 2))
    assert worst.tolist() == [1, 2, 1, 2, 0]
    plain = worst_case_predictions(labels, clean, [a, b], harmful=None)
    assert plain.tolist() == [1, 0, 1, 2, 0]  # first wrong prediction in order


def test_metrics_carry_wilson_intervals_beside_every_rate():
    from fortify.evaluation.metrics import INTERVAL
    from fortify.evaluation.stats import wilson_interval

    labels = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
    preds = torch.tensor([0, 1, 0, 1, 1, 2, 1, 2, 0, 2])
    m = classification_metrics(labels, preds, CLASSES)
    assert INTERVAL == {"method": "wilson", "level": 0.95}
    assert m["accuracy_ci"] == pytest.approx(list(wilson_interval(7, 10)))
    b = m["per_class"]["benign"]
    assert b["sensitivity_ci"] == pytest.approx(list(wilson_interval(2, 3)))
    assert b["specificity_ci"] == pytest.approx(list(wilson_interval(6, 7)))
    assert {"sensitivity", "specificity", "precision", "support"} <= set(b)  # old keys kept
    lo, hi = m["accuracy_ci"]
    assert lo < m["accuracy"] < hi


def test_undefined_rates_have_no_interval():
    m = classification_metrics(torch.tensor([0, 0]), torch.tensor([0, 0]), CLASSES)
    assert m["per_class"]["malignant"]["sensitivity_ci"] is None
    assert m["per_class"]["malignant"]["specificity_ci"] == [pytest.approx(0.3424, abs=5e-5), 1.0]
    empty = classification_metrics(
        torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long), CLASSES
    )
    assert empty["accuracy"] is None and empty["accuracy_ci"] is None
