"""The gradient-free and unbounded-CW sanity checks: thresholds, None handling, result shape.

(The end-to-end case, a quantising model that masks gradients, is in
tests/attacks/test_attack_gradient_masking.py, next to the attack fixtures it needs.)
"""

from __future__ import annotations

import pytest

from fortify.evaluation import sanity

KEYS = {"check", "passed", "detail", "undermines"}


def test_gradient_free_threshold_is_max_of_images_and_fraction():
    # 1% of 165 images is 1.65: one image passes, two fail.
    assert sanity.gradient_free_not_stronger(165, 0, ["strong"])["passed"]
    assert sanity.gradient_free_not_stronger(165, 1, ["strong"])["passed"]
    assert not sanity.gradient_free_not_stronger(165, 2, ["strong"])["passed"]
    # On a tiny test set the floor of max_images keeps one unlucky image from failing the check.
    assert sanity.gradient_free_not_stronger(20, 1, ["strong"])["passed"]
    assert not sanity.gradient_free_not_stronger(20, 2, ["strong"])["passed"]
    # On a large one the fraction decides: 1% of 1000 is 10.
    assert sanity.gradient_free_not_stronger(1000, 10, ["strong"])["passed"]
    assert not sanity.gradient_free_not_stronger(1000, 11, ["strong"])["passed"]


def test_gradient_free_settings_and_result_shape():
    res = sanity.gradient_free_not_stronger(100, 5, ["pgd", "strong"], max_fraction=0.05, max_images=0)
    assert set(res) == KEYS and res["passed"] is True and res["undermines"] == ["pgd", "strong"]
    assert "5 of 100" in res["detail"]
    bad = sanity.gradient_free_not_stronger(100, 6, ("strong",), max_fraction=0.05, max_images=0)
    assert bad["passed"] is False and "gradient masking" in bad["detail"]
    assert bad["undermines"] == ["strong"]
    assert sanity.gradient_free_not_stronger(0, 0, [])["passed"]


@pytest.mark.parametrize("rate, passed", [(1.0, True), (0.95, True), (0.949, False), (0.0, False)])
def test_unbounded_cw_threshold(rate, passed):
    res = sanity.unbounded_cw_succeeds(rate, ["cw"])
    assert set(res) == KEYS and res["passed"] is passed and res["undermines"] == ["cw"]
    assert "%" in res["detail"]


def test_unbounded_cw_custom_threshold_and_not_applicable():
    assert sanity.unbounded_cw_succeeds(0.9, ["cw"], threshold=0.9)["passed"]
    assert not sanity.unbounded_cw_succeeds(0.89, ["cw"], threshold=0.9)["passed"]
    na = sanity.unbounded_cw_succeeds(None, ["cw"])
    assert na["passed"] is True and "not applicable" in na["detail"]
