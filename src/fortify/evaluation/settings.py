"""EvalSettings: every budget of an evaluation, defaulted here and nowhere else.

`evaluate_checkpoint`'s keyword defaults, `default_attack_specs`' budgets, `fortify evaluate`'s option
defaults and a profile's `evaluate:` section all read this dataclass: a profile states only what it
changes, and anything it leaves out is the value below (tests/evaluation/test_settings.py checks that
no other place restates one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The fields `default_attack_specs` reads (the headline attack set's budgets).
ATTACK_BUDGET_FIELDS = (
    "pgd_steps",
    "pgd_restarts",
    "cw_steps",
    "cw_binary_steps",
    "cw_budget",
    "strong_steps",
    "square_queries",
    "l2_steps",
    "strong_version",
)


@dataclass
class EvalSettings:
    """Budgets for `fortify.evaluation.evaluate_checkpoint` (attacks at the profile's headline eps)."""

    attacks: list[str] | None = (
        None  # explicit specs; None -> FGSM, PGD, budgeted CW, strong from the fields below
    )
    pgd_steps: int = 20
    pgd_restarts: int = 1
    cw_steps: int = 100  # CW-L2's own defaults (100 steps x 5 binary-search rounds)
    cw_binary_steps: int = 5
    cw_budget: float | None = None  # L2 budget for "accuracy under CW"; None -> evaluation's eps*sqrt(d)/2
    strong_steps: int | None = None  # None -> strong's own AutoAttack-standard budget (APGD 100 steps)
    square_queries: int | None = None  # None -> strong's own (5000 queries); fewer = upper bounds
    l2_steps: int | None = None  # APGD-L2 at the CW budget; None -> strong's steps
    strong_version: str | None = None  # strong's components: "full" or "standard"; None -> strong's own
    score_precision: str = "fp32"  # every reported prediction is scored in this precision
    fold_bn: bool = True  # attack a copy with batch norm folded into the convolutions (same function)
    eps_curve: list[float] = field(default_factory=lambda: [0, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255])
    # A curve attacks at every eps, so it gets its own (smaller) step budgets.
    curve_attacks: list[str] = field(
        default_factory=lambda: ["pgd:steps=10", "strong:steps=10,square_queries=100"]
    )
    # An image fooled at one eps keeps its example at every larger eps and is not attacked again there
    # (a point = robust at every eps up to it); False attacks every eps independently over all images.
    curve_cumulative: bool = True
    batch_size: int = 64
    limit: int | None = None  # first k test images (class-stratified); None = the whole test split
    examples_per_class: int = 2
    sanity_steps_factor: int = 2
    sanity_restarts: int = 2
    transfer_attack: str | None = None  # None -> the PGD spec of `attacks`

    def attack_budgets(self) -> dict[str, Any]:
        """The keyword arguments `default_attack_specs` takes from these settings."""
        return {name: getattr(self, name) for name in ATTACK_BUDGET_FIELDS}


DEFAULTS = EvalSettings()
