"""Classification and perturbation metrics, as plain functions over label/prediction tensors.

Everything here is pure (no model, no attack) so it can be checked against hand-computed
confusion matrices. Fractions are in [0, 1]; a metric that is undefined (no support, no
successful attack) is `None` rather than 0, so a report cannot mistake "undefined" for "zero".
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fortify.evaluation.stats import interval_or_none

# How every *_ci in a METRICS block was computed; evaluate.py records it at results["interval"] so a
# reader (and the report) can say which interval a bracket is. One split: the interval covers the
# sampling of test images only, not the variation from retraining or resplitting.
INTERVAL = {"method": "wilson", "level": 0.95}


def confusion_matrix(labels: torch.Tensor, preds: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Rows = true class, columns = predicted class (int64)."""
    labels = labels.long().cpu()
    preds = preds.long().cpu()
    flat = labels * num_classes + preds
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _ratio(num: float, den: float) -> float | None:
    return None if den == 0 else float(num) / float(den)


def metrics_from_confusion(confusion: torch.Tensor, classes: Sequence[str]) -> dict:
    """The METRICS block of results.json from a confusion matrix (rows true, cols predicted).

    `accuracy_ci`, and per class `sensitivity_ci` / `specificity_ci`, are Wilson intervals (INTERVAL)
    as [lo, hi], or None where the rate itself is undefined."""
    cm = confusion.long()
    n = int(cm.sum())
    correct = int(cm.diag().sum())
    per_class = {}
    sensitivities = []
    for k, name in enumerate(classes):
        tp = int(cm[k, k])
        fn = int(cm[k, :].sum()) - tp
        fp = int(cm[:, k].sum()) - tp
        tn = n - tp - fn - fp
        sensitivity = _ratio(tp, tp + fn)
        level = INTERVAL["level"]
        per_class[name] = {
            "sensitivity": sensitivity,
            "specificity": _ratio(tn, tn + fp),
            "precision": _ratio(tp, tp + fp),
            "support": tp + fn,
            "sensitivity_ci": interval_or_none(tp, tp + fn, level),
            "specificity_ci": interval_or_none(tn, tn + fp, level),
        }
        if sensitivity is not None:
            sensitivities.append(sensitivity)
    return {
        "accuracy": _ratio(correct, n),
        "accuracy_ci": interval_or_none(correct, n, INTERVAL["level"]),
        # Balanced accuracy = mean recall over the classes present in the evaluated set.
        "balanced_accuracy": sum(sensitivities) / len(sensitivities) if sensitivities else None,
        "n": n,
        "correct": correct,
        "per_class": per_class,
        "confusion": cm.tolist(),
    }


def classification_metrics(labels: torch.Tensor, preds: torch.Tensor, classes: Sequence[str]) -> dict:
    return metrics_from_confusion(confusion_matrix(labels, preds, len(classes)), classes)


def perturbation_norms(x: torch.Tensor, x_adv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample L2 and L-inf norms of x_adv - x, computed in float64 on CPU."""
    delta = (x_adv.detach().double().cpu() - x.detach().double().cpu()).flatten(1)
    return delta.norm(p=2, dim=1), delta.abs().amax(dim=1)


def _median_mean(values: torch.Tensor) -> tuple[float | None, float | None]:
    if values.numel() == 0:
        return None, None
    # torch.median returns the lower of the two middle values; use the usual midpoint median.
    v = values.double().sort().values
    mid = v.numel() // 2
    median = float(v[mid]) if v.numel() % 2 else float((v[mid - 1] + v[mid]) / 2)
    return median, float(v.mean())


def perturbation_stats(l2: torch.Tensor, linf: torch.Tensor, successful: torch.Tensor) -> dict:
    """Median and mean perturbation over the successful examples only (None when there are none)."""
    l2_median, l2_mean = _median_mean(l2[successful.cpu()])
    linf_median, linf_mean = _median_mean(linf[successful.cpu()])
    return {
        "l2_median": l2_median,
        "l2_mean": l2_mean,
        "linf_median": linf_median,
        "linf_mean": linf_mean,
        "n_successful": int(successful.sum()),
    }


def median(values: torch.Tensor) -> float | None:
    return _median_mean(values)[0]


def success_rate(labels: torch.Tensor, clean_preds: torch.Tensor, adv_preds: torch.Tensor) -> float | None:
    """Fooled / originally correct. Clean-misclassified images are not counted as attack successes."""
    originally_correct = clean_preds == labels
    fooled = originally_correct & (adv_preds != labels)
    return _ratio(int(fooled.sum()), int(originally_correct.sum()))


def worst_case_predictions(
    labels: torch.Tensor,
    clean_preds: torch.Tensor,
    attack_preds: Sequence[torch.Tensor],
    harmful: tuple[int, int] | None,
) -> torch.Tensor:
    """One prediction per image that is correct only if the image is robust to every attack.

    A misclassified image gets the first wrong prediction in the order clean, attacks...; except
    that when `harmful=(true, pred)` is given (malignant -> normal) and any run produced that
    mistake, that one is kept, so the worst-case confusion matrix shows the clinically worst error.
    """
    worst = labels.clone()
    runs = [clean_preds, *attack_preds]
    # Walk backwards so the earliest wrong prediction wins.
    for preds in reversed(runs):
        wrong = preds != labels
        worst[wrong] = preds[wrong]
    if harmful is not None:
        true_k, pred_k = harmful
        for preds in runs:
            hit = (labels == true_k) & (preds == pred_k)
            worst[hit] = pred_k
    return worst
