"""Interval estimates and paired tests for accuracies measured on one finite test set.

A test split of a few hundred CT slices gives accuracies that move by several points from one split to
the next, so every accuracy fortify reports carries an interval, and two models evaluated on the same
images are compared with a paired test. The distributions come from statsmodels/scipy; only the
combination rules (Newcombe's square-and-add, the t-interval) are written out here.

Undefined quantities (no images, fewer than two folds) are NaN from these functions; callers that write
JSON turn NaN into null (json.dumps would write the non-standard token `NaN`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from fortify.intervals import interval_or_none, wilson_interval

__all__ = [
    "interval_or_none",
    "mean_std_interval",
    "mcnemar_exact",
    "paired_difference_interval",
    "wilson_interval",
]

# statsmodels and scipy.stats are imported inside the functions: statsmodels.stats.proportion pulls in
# pandas (~1 s), which every `import fortify.evaluation` (training, the CLI) would otherwise pay.
NAN = float("nan")


def mcnemar_exact(b01: int, b10: int) -> float:
    """Exact two-sided McNemar p-value from the discordant pair counts.

    Under H0 (equal accuracy) each discordant pair falls either way with probability 1/2, so
    p = min(1, 2 * P[Bin(b01 + b10, 1/2) <= min(b01, b10)]). No discordant pairs -> p = 1."""
    if b01 < 0 or b10 < 0:
        raise ValueError(f"discordant counts must be >= 0, got {b01}, {b10}")
    if b01 + b10 == 0:
        return 1.0
    from statsmodels.stats.contingency_tables import mcnemar

    return float(mcnemar([[0, b01], [b10, 0]], exact=True).pvalue)


def _paired_table(a_correct: Sequence[int | bool], b_correct: Sequence[int | bool]) -> tuple[int, ...]:
    a = np.asarray(a_correct, dtype=bool)
    b = np.asarray(b_correct, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired outcomes need two 1-D sequences of equal length, got {a.shape}, {b.shape}")
    both = int((a & b).sum())
    only_a = int((a & ~b).sum())
    only_b = int((~a & b).sum())
    neither = int((~a & ~b).sum())
    return both, only_a, only_b, neither


def paired_difference_interval(
    a_correct: Sequence[int | bool], b_correct: Sequence[int | bool], level: float = 0.95
) -> tuple[float, float, float]:
    """(accuracy of b - accuracy of a, lo, hi) for two classifiers scored on the same images.

    Newcombe's (1998, Stat Med 17:2635, method 10) hybrid score interval for paired proportions, as
    given in Fagerland, Lydersen & Laake (2017, "Statistical Analysis of Contingency Tables", ch. 8,
    "Newcombe square-and-add"): Wilson intervals [l_a, u_a], [l_b, u_b] for the two accuracies are
    combined by square-and-add, corrected for the correlation between the paired outcomes:
        lo = d - sqrt((p_b - l_b)^2 + (u_a - p_a)^2 - 2 phi (p_b - l_b)(u_a - p_a))
        hi = d + sqrt((u_b - p_b)^2 + (p_a - l_a)^2 - 2 phi (u_b - p_b)(p_a - l_a))
    with d = p_b - p_a and phi the phi coefficient of the 2x2 table (both right, only a, only b,
    neither), its numerator AD - BC shrunk towards 0 by n/2 when positive, as in the paper. phi = 0
    when a margin is empty. A Wald interval would collapse to a point when there are no discordant
    pairs and overshoot [-1, 1] near the edges; this one does neither. NaNs for an empty input."""
    both, only_a, only_b, neither = _paired_table(a_correct, b_correct)
    n = both + only_a + only_b + neither
    if n == 0:
        return NAN, NAN, NAN
    k_a, k_b = both + only_a, both + only_b
    p_a, p_b = k_a / n, k_b / n
    l_a, u_a = wilson_interval(k_a, n, level)
    l_b, u_b = wilson_interval(k_b, n, level)
    margins = (k_a, n - k_a, k_b, n - k_b)
    if min(margins) == 0:
        phi = 0.0
    else:
        # Table rows = b right/wrong, columns = a right/wrong: A = both, B = only b, C = only a, D = neither.
        num = both * neither - only_a * only_b
        if num > n / 2:
            num -= n / 2
        elif num >= 0:
            num = 0.0
        phi = num / math.sqrt(math.prod(float(m) for m in margins))
    d = p_b - p_a
    lo = d - math.sqrt(max((p_b - l_b) ** 2 + (u_a - p_a) ** 2 - 2 * phi * (p_b - l_b) * (u_a - p_a), 0.0))
    hi = d + math.sqrt(max((u_b - p_b) ** 2 + (p_a - l_a) ** 2 - 2 * phi * (u_b - p_b) * (p_a - l_a), 0.0))
    return d, max(lo, -1.0), min(hi, 1.0)


def mean_std_interval(
    values: Sequence[float], level: float = 0.95, bounds: tuple[float, float] | None = None
) -> dict:
    """Summary of per-fold numbers: mean, sample std (ddof=1), n and a t-interval for the mean.

    The t-interval treats the folds as independent draws, which they are not quite (the training sets
    overlap), so it is optimistic; it is still more honest than a bare mean. With few folds it can
    reach past the possible range; `bounds` (e.g. (0, 1) for accuracies) clips it there. Undefined
    parts (std and interval with fewer than two values, everything with none) are None."""
    v = np.asarray([float(x) for x in values], dtype=float)
    n = int(v.size)
    out: dict = {"mean": None, "std": None, "n": n, "ci": None, "level": level}
    if n == 0:
        return out
    out["mean"] = float(v.mean())
    if n < 2:
        return out
    from scipy import stats as sps

    std = float(v.std(ddof=1))
    out["std"] = std
    half = float(sps.t.ppf(0.5 + level / 2, df=n - 1)) * std / math.sqrt(n)
    lo, hi = out["mean"] - half, out["mean"] + half
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    out["ci"] = [lo, hi]
    return out
