"""fortify.evaluation.stats against published values and independent closed-form computations."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from fortify.evaluation.stats import (
    interval_or_none,
    mcnemar_exact,
    mean_std_interval,
    paired_difference_interval,
    wilson_interval,
)

Z95 = 1.959963984540054  # standard normal 97.5% quantile


def wilson_closed_form(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson (1927) score interval written out, independent of statsmodels."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


# Newcombe RG (1998) "Two-sided confidence intervals for the single proportion: comparison of seven
# methods", Stat Med 17:857-872, Table II, method 3 (score interval without continuity correction).
@pytest.mark.parametrize(
    "k, n, lo, hi",
    [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)],
)
def test_wilson_matches_newcombe_1998_table(k, n, lo, hi):
    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=5e-5)
    assert got == pytest.approx(wilson_closed_form(k, n), abs=1e-12)


@pytest.mark.parametrize("k, n", [(5, 7), (163, 165), (30, 30), (0, 1)])
def test_wilson_matches_closed_form_and_stays_in_unit_interval(k, n):
    lo, hi = wilson_interval(k, n)
    ref = wilson_closed_form(k, n)
    assert (lo, hi) == pytest.approx((max(ref[0], 0.0), min(ref[1], 1.0)), abs=1e-12)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_wilson_degenerate_cases():
    lo, hi = wilson_interval(0, 0)
    assert math.isnan(lo) and math.isnan(hi)
    assert interval_or_none(0, 0) is None
    assert wilson_interval(20, 20)[1] == 1.0  # no 0.9999999999999999 from float noise
    assert wilson_interval(20, 20)[0] == pytest.approx(0.8389, abs=5e-5)  # mirror of 0/20 above
    with pytest.raises(ValueError):
        wilson_interval(5, 4)


def exact_mcnemar_by_hand(b: int, c: int) -> Fraction:
    n = b + c
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(Fraction(1), 2 * Fraction(tail, 2**n))


def test_mcnemar_exact_known_values():
    # 1 vs 9 discordant: 2 * (C(10,0) + C(10,1)) / 2^10 = 22/1024
    assert mcnemar_exact(1, 9) == pytest.approx(22 / 1024, rel=1e-12)
    assert mcnemar_exact(9, 1) == mcnemar_exact(1, 9)
    # Cavo et al. (2012) table (59, 6 / 16, 80): McNemar exact conditional P = 0.052479 in Fagerland,
    # Lydersen & Laake (2017) "Statistical Analysis of Contingency Tables", ch. 8 (R package
    # contingencytables, tests/testthat/test-ch8.R).
    assert mcnemar_exact(6, 16) == pytest.approx(0.052479, abs=5e-7)
    for b, c in ((0, 5), (3, 3), (7, 20), (40, 55)):
        assert mcnemar_exact(b, c) == pytest.approx(float(exact_mcnemar_by_hand(b, c)), rel=1e-9)


def test_mcnemar_no_discordant_pairs_is_one():
    assert mcnemar_exact(0, 0) == 1.0
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)


def paired(both: int, only_b: int, only_a: int, neither: int) -> tuple[list[int], list[int]]:
    a = [1] * both + [0] * only_b + [1] * only_a + [0] * neither
    b = [1] * both + [1] * only_b + [0] * only_a + [0] * neither
    return a, b


def test_paired_interval_matches_fagerland_cavo_example():
    # Fagerland et al. (2017) ch. 8, Newcombe square-and-add (Newcombe 1998 method 10) on Cavo et al.
    # (2012): rows = first measurement (b here), columns = second (a); estimate -0.0621,
    # 95% CI -0.1186 to -0.0046 (contingencytables test-ch8.R).
    d, lo, hi = paired_difference_interval(*paired(59, 6, 16, 80))
    assert d == pytest.approx(-10 / 161)
    assert (lo, hi) == pytest.approx((-0.1186, -0.0046), abs=5e-5)
    # swapping the models mirrors the interval
    d2, lo2, hi2 = paired_difference_interval(*reversed(paired(59, 6, 16, 80)))
    assert (d2, lo2, hi2) == pytest.approx((-d, -hi, -lo))


def newcombe10_by_hand(both: int, only_b: int, only_a: int, neither: int) -> tuple[float, float, float]:
    """Method 10 written from the paper's formulas with the closed-form Wilson limits."""
    n = both + only_b + only_a + neither
    pa, pb = (both + only_a) / n, (both + only_b) / n
    la, ua = wilson_closed_form(both + only_a, n)
    lb, ub = wilson_closed_form(both + only_b, n)
    la, lb, ua, ub = max(la, 0), max(lb, 0), min(ua, 1), min(ub, 1)
    margins = [both + only_a, only_b + neither, both + only_b, only_a + neither]
    a = both * neither - only_a * only_b
    c = a - n / 2 if a > n / 2 else (0 if a >= 0 else a)
    phi = 0 if 0 in margins else c / math.sqrt(math.prod(margins))
    d = pb - pa
    lo = d - math.sqrt((pb - lb) ** 2 - 2 * phi * (pb - lb) * (ua - pa) + (ua - pa) ** 2)
    hi = d + math.sqrt((ub - pb) ** 2 - 2 * phi * (ub - pb) * (pa - la) + (pa - la) ** 2)
    return d, lo, hi


@pytest.mark.parametrize("table", [(36, 12, 2, 0), (1, 1, 7, 12), (120, 3, 25, 17), (10, 0, 0, 5)])
def test_paired_interval_matches_independent_computation(table):
    got = paired_difference_interval(*paired(*table))
    assert got == pytest.approx(newcombe10_by_hand(*table), abs=1e-10)
    d, lo, hi = got
    assert -1 <= lo <= d <= hi <= 1


def test_paired_interval_degenerate_cases():
    d, lo, hi = paired_difference_interval([1] * 30, [1] * 30)  # both always right
    assert d == 0 and lo < 0 < hi  # no discordant pairs is not certainty of equality
    assert all(math.isnan(x) for x in paired_difference_interval([], []))
    with pytest.raises(ValueError):
        paired_difference_interval([1, 0], [1])


def test_mean_std_interval():
    s = mean_std_interval([0.8, 0.85, 0.9])
    assert s["n"] == 3 and s["mean"] == pytest.approx(0.85) and s["std"] == pytest.approx(0.05)
    half = 4.302652729911275 * 0.05 / math.sqrt(3)  # t(0.975, df=2) = 4.3027 (any t table)
    assert s["ci"] == pytest.approx([0.85 - half, 0.85 + half])
    one = mean_std_interval([0.7])
    assert one["mean"] == 0.7 and one["std"] is None and one["ci"] is None
    assert mean_std_interval([])["mean"] is None
    flat = mean_std_interval([0.5, 0.5])
    assert flat["std"] == 0 and flat["ci"] == [0.5, 0.5]


def test_mean_std_interval_can_be_clipped_to_the_possible_range():
    raw = mean_std_interval([0.9, 1.0, 0.95])
    assert raw["ci"][1] > 1
    clipped = mean_std_interval([0.9, 1.0, 0.95], bounds=(0.0, 1.0))
    assert clipped["ci"] == [raw["ci"][0], 1.0] and clipped["mean"] == raw["mean"]
