"""Sanity checks on attack results (Carlini et al. 2019, "On Evaluating Adversarial Robustness").

Each check is a pure function over accuracies that returns
`{"check", "passed", "detail", "undermines"}`; `undermines` lists the attack keys whose headline
number a FAIL calls into question. They take numbers, not models, so a contrived case (a rising
curve, noise as strong as the attack) can be fed in and must FAIL.

Default tolerance is 1 point of accuracy (0.01): on ~165 test images one image is 0.6 pt, so the
checks tolerate one or two images of attack randomness but no more; on fewer than 100 images an
evaluation passes `tolerance_for(n)`, one image.
"""

from __future__ import annotations

from collections.abc import Sequence

TOLERANCE = 0.01


def tolerance_for(n: int) -> float:
    """TOLERANCE, or one image where one image is more than that (a test set under 100 images): the
    checks compare runs on the same images, and one image's attack randomness must not fail them (on 27
    images PGD-40 with 2 restarts fooled one image more than PGD-20 on a healthy 16 px CNN)."""
    return max(TOLERANCE, 1.0 / n + 1e-9) if n > 0 else TOLERANCE


def _pct(a: float | None) -> str:
    return "n/a" if a is None else f"{100 * a:.1f}%"


def _check(name: str, passed: bool, detail: str, undermines: Sequence[str]) -> dict:
    return {"check": name, "passed": bool(passed), "detail": detail, "undermines": list(undermines)}


def non_increasing_in_eps(
    curve_name: str,
    points: Sequence[Sequence[float]],
    undermines: Sequence[str],
    tolerance: float = TOLERANCE,
) -> dict:
    """Robust accuracy must not rise with eps (a larger ball contains every smaller-ball example)."""
    pts = sorted((float(e), float(a)) for e, a in points)
    rises = [
        (e0, a0, e1, a1) for (e0, a0), (e1, a1) in zip(pts, pts[1:], strict=False) if a1 > a0 + tolerance
    ]
    curve = ", ".join(f"{255 * e:g}/255: {_pct(a)}" for e, a in pts)
    if rises:
        e0, a0, e1, a1 = rises[0]
        detail = (
            f"accuracy rises from {_pct(a0)} at eps={255 * e0:g}/255 to {_pct(a1)} at eps={255 * e1:g}/255 "
            f"(tolerance {_pct(tolerance)}); curve: {curve}"
        )
    else:
        detail = f"curve: {curve}"
    return _check(f"accuracy non-increasing in eps ({curve_name})", not rises, detail, undermines)


def near_zero_at_large_eps(
    spec: str, accuracy: float, undermines: Sequence[str], threshold: float = 0.05
) -> dict:
    """With an (effectively) unbounded budget every image can be changed to another class's image."""
    return _check(
        "accuracy ~0 at a large eps",
        accuracy <= threshold,
        f"{spec}: accuracy {_pct(accuracy)} (must be <= {_pct(threshold)})",
        undermines,
    )


def no_weaker_than(
    stronger: str,
    stronger_accuracy: float,
    weaker: str,
    weaker_accuracy: float,
    undermines: Sequence[str],
    tolerance: float = TOLERANCE,
    name: str | None = None,
) -> dict:
    """`stronger` must leave no more accuracy than `weaker` (e.g. PGD vs FGSM, strong vs PGD)."""
    return _check(
        name or f"{stronger} no weaker than {weaker}",
        stronger_accuracy <= weaker_accuracy + tolerance,
        f"{stronger}: {_pct(stronger_accuracy)} vs {weaker}: {_pct(weaker_accuracy)} "
        f"(tolerance {_pct(tolerance)})",
        undermines,
    )


def more_iterations_stable(
    base_spec: str,
    base_accuracy: float,
    more_spec: str,
    more_accuracy: float,
    undermines: Sequence[str],
    tolerance: float = TOLERANCE,
) -> list[dict]:
    """Two checks on a PGD run with 2x steps and more restarts.

    - more iterations must not *raise* accuracy by more than the tolerance (that would mean the
      attack's outcome is mostly noise);
    - more iterations must not *lower* it by more than the tolerance either: then the headline
      PGD had not converged and over-states robustness.
    """
    detail = (
        f"{base_spec}: {_pct(base_accuracy)} vs {more_spec}: {_pct(more_accuracy)} "
        f"(tolerance {_pct(tolerance)})"
    )
    return [
        _check(
            "more PGD steps/restarts do not raise accuracy",
            more_accuracy <= base_accuracy + tolerance,
            detail,
            undermines,
        ),
        _check(
            "PGD converged (more steps/restarts do not lower accuracy)",
            more_accuracy >= base_accuracy - tolerance,
            detail,
            undermines,
        ),
    ]


def noise_much_weaker(
    attack: str,
    clean_accuracy: float,
    attack_accuracy: float,
    noise_accuracy: float,
    eps: float,
    undermines: Sequence[str],
    fraction: float = 0.5,
    tolerance: float = TOLERANCE,
) -> dict:
    """Random sign noise of the same L-inf size must cost at most `fraction` of the attack's drop.

    If noise hurts as much as the attack, the attack is finding nothing a gradient-free search
    would not, a classic symptom of gradient masking.
    """
    noise_drop = clean_accuracy - noise_accuracy
    attack_drop = clean_accuracy - attack_accuracy
    passed = noise_drop <= fraction * attack_drop + tolerance
    return _check(
        "random noise much weaker than the attack",
        passed,
        f"clean {_pct(clean_accuracy)}; random sign noise eps={255 * eps:g}/255: {_pct(noise_accuracy)}; "
        f"{attack}: {_pct(attack_accuracy)} (noise may cost at most {fraction:g}x the attack's drop "
        f"+ {_pct(tolerance)})",
        undermines,
    )


def white_box_no_weaker_than_transfer(
    white_box_accuracy: float,
    transfer_accuracy: float,
    source: str,
    attack: str,
    undermines: Sequence[str],
    tolerance: float = TOLERANCE,
) -> dict:
    """Attacking the model itself must beat examples crafted on another model."""
    return _check(
        "white-box no weaker than transfer",
        white_box_accuracy <= transfer_accuracy + tolerance,
        f"{attack}: white-box {_pct(white_box_accuracy)} vs transferred from {source} "
        f"{_pct(transfer_accuracy)} "
        f"(tolerance {_pct(tolerance)})",
        undermines,
    )


def gradient_free_not_stronger(
    n_evaluated: int,
    n_fooled_only_by_gradient_free: int,
    undermines: Sequence[str],
    *,
    max_fraction: float = 0.01,
    max_images: int = 1,
) -> dict:
    """A gradient-free attack (Square) must find almost nothing that every gradient attack missed.

    Gradient attacks with a good schedule (APGD, PGD) are far more query-efficient than random
    search, so on a model whose gradients are informative the Square stage of AutoAttack
    (Croce & Hein 2020), run on the images its APGD components left standing, typically fools
    well under 1% more. When it fools more, the gradients steered the
    gradient attacks away from adversarial examples that exist: gradient masking (shattered,
    obfuscated or zero gradients, e.g. a non-differentiable input quantisation), and every
    gradient-based number overstates robustness. The threshold is `max_fraction` of the
    evaluated images but never fewer than `max_images`, so one unlucky image on a small test set
    does not fail the check.
    """
    allowed = max(max_images, max_fraction * n_evaluated)
    passed = n_fooled_only_by_gradient_free <= allowed
    return _check(
        "gradient-free attack not stronger than gradient attacks",
        passed,
        f"{n_fooled_only_by_gradient_free} of {n_evaluated} images fooled only by the gradient-free attack "
        f"(at most {allowed:g} allowed: max({max_images}, {max_fraction:g} x {n_evaluated}))"
        + ("" if passed else "; the gradients mislead the gradient attacks (gradient masking)"),
        undermines,
    )


def unbounded_cw_succeeds(
    success_rate: float | None, undermines: Sequence[str], *, threshold: float = 0.95
) -> dict:
    """Unbounded CW-L2 must fool (almost) every originally-correct image.

    Without a norm budget an adversarial example always exists (in the limit, an image of
    another class), so an optimisation attack that fails on more than a few images is being
    misled (masked or saturated gradients) or under-run, not facing a robust model. None means
    no unbounded CW run was made: not applicable, reported as passed.
    """
    name = "unbounded CW-L2 fools ~all correct images"
    if success_rate is None:
        return _check(name, True, "not applicable: no unbounded CW-L2 run", undermines)
    return _check(
        name,
        success_rate >= threshold,
        f"unbounded CW-L2 success rate {_pct(success_rate)} on originally-correct images "
        f"(must be >= {_pct(threshold)})",
        undermines,
    )
