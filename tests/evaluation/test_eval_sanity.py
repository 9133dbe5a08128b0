"""Every sanity check must be able to FAIL on a contrived case, and PASS on a healthy one."""

from __future__ import annotations

from fortify.evaluation import sanity


def test_rising_curve_fails_and_falling_curve_passes():
    bad = sanity.non_increasing_in_eps("pgd", [[0, 0.9], [2 / 255, 0.5], [4 / 255, 0.6]], ["pgd"])
    assert bad["passed"] is False and bad["undermines"] == ["pgd"] and "rises" in bad["detail"]
    good = sanity.non_increasing_in_eps("pgd", [[0, 0.9], [2 / 255, 0.5], [4 / 255, 0.505]], ["pgd"])
    assert good["passed"] is True  # within the 1 pt tolerance


def test_large_eps_must_reach_near_zero():
    assert sanity.near_zero_at_large_eps("pgd:eps=1", 0.2, ["pgd"])["passed"] is False
    assert sanity.near_zero_at_large_eps("pgd:eps=1", 0.0, ["pgd"])["passed"] is True


def test_stronger_attack_weaker_than_fgsm_fails():
    assert sanity.no_weaker_than("pgd", 0.40, "fgsm", 0.30, ["pgd"])["passed"] is False
    assert sanity.no_weaker_than("pgd", 0.30, "fgsm", 0.40, ["pgd"])["passed"] is True


def test_more_iterations_changing_accuracy_fails_both_ways():
    raised = sanity.more_iterations_stable("pgd-20", 0.30, "pgd-40x2", 0.35, ["pgd"])
    assert [c["passed"] for c in raised] == [False, True]
    lowered = sanity.more_iterations_stable("pgd-20", 0.30, "pgd-40x2", 0.20, ["pgd"])
    assert [c["passed"] for c in lowered] == [True, False]
    stable = sanity.more_iterations_stable("pgd-20", 0.30, "pgd-40x2", 0.295, ["pgd"])
    assert all(c["passed"] for c in stable)


def test_noise_as_strong_as_attack_fails():
    bad = sanity.noise_much_weaker("strong", 0.9, 0.5, 0.55, 2 / 255, ["strong"])
    assert bad["passed"] is False
    good = sanity.noise_much_weaker("strong", 0.9, 0.5, 0.88, 2 / 255, ["strong"])
    assert good["passed"] is True
    robust_model = sanity.noise_much_weaker("strong", 0.9, 0.9, 0.9, 2 / 255, ["strong"])
    assert robust_model["passed"] is True  # neither hurts: nothing suspicious


def test_transfer_beating_white_box_fails():
    bad = sanity.white_box_no_weaker_than_transfer(0.6, 0.4, "normal", "pgd:eps=2/255", ["pgd"])
    assert bad["passed"] is False and set(bad) == {"check", "passed", "detail", "undermines"}
    assert sanity.white_box_no_weaker_than_transfer(0.2, 0.4, "normal", "pgd", ["pgd"])["passed"] is True
