"""Wilson score intervals: the one interval every accuracy in fortify carries (a leaf module, so the data
layer can use it for the leakage sentinel and evaluation for everything else)."""

from __future__ import annotations

import math

NAN = float("nan")


def wilson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials; (nan, nan) when n == 0.

    Wilson rather than the normal approximation: it stays inside [0, 1] and keeps its coverage near
    0 and 1, where robust accuracies under attack often sit (Newcombe 1998, Stat Med 17:857)."""
    if n <= 0:
        return NAN, NAN
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    from statsmodels.stats.proportion import proportion_confint

    lo, hi = proportion_confint(k, n, alpha=1 - level, method="wilson")
    # The exact limits at k == 0 and k == n are 0 and 1; statsmodels can return 0.9999999999999999.
    lo = 0.0 if k == 0 else float(min(max(lo, 0.0), k / n))
    hi = 1.0 if k == n else float(min(max(hi, k / n), 1.0))
    return lo, hi


def interval_or_none(k: int, n: int, level: float = 0.95) -> list[float] | None:
    """Wilson interval as a JSON-ready [lo, hi], or None when undefined (n == 0)."""
    lo, hi = wilson_interval(k, n, level)
    return None if math.isnan(lo) else [lo, hi]
