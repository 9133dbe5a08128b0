"""Which attacks an evaluation runs by default, and how their results are keyed.

Threat model (stated because the study did not): white-box, untargeted, pixel values in [0, 1]
after preprocessing (grayscale, center-square crop, resize to the checkpoint's image size).
- FGSM, PGD and strong: L-inf ball of radius eps (headline eps = 2/255). `strong` is the headline:
  APGD-CE, APGD-DLR, targeted APGD-DLR on every other class, PGD-CW, then the gradient-free Square
  attack on the survivors, at AutoAttack-standard budgets (APGD 100 steps, Square 5000 queries)
  unless a profile cuts them, in which case results.json's "budget" says so and the report marks
  the robust accuracies as upper bounds.
- L2 ball of radius B = eps * sqrt(C * H * W) / 2, half the L2 length of an L-inf perturbation
  that moves every pixel by eps (the corner of the L-inf ball). At eps = 2/255 and 128x128x1 that
  is B = 0.502, the same order as the 0.5 used for L2 robustness on CIFAR-10. Accuracy in that ball
  is measured with APGD-L2 (stronger and cheaper than CW); CW-L2 is run unbounded for the study's
  CW column (an image counts as robust under CW when its smallest successful L2 perturbation
  exceeds B) and for the median minimal L2.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence

from fortify.attacks import ATTACKS, AttackSpec, ThreatModel, attack_defaults
from fortify.evaluation.settings import DEFAULTS, EvalSettings

DEFAULT_THREAT_MODEL = DEFAULTS.threat_model
DEFAULT_EPS = DEFAULTS.eps
DEFAULT_CURVE_ATTACKS = tuple(DEFAULTS.curve_attacks)
# The study's pooled adversarial set ("combined") is made of these attacks' outputs.
COMBINED_ATTACKS = ("fgsm", "pgd", "cw")


def cw_l2_budget(eps: float, image_size: int, in_channels: int = 1) -> float:
    return eps * math.sqrt(in_channels * image_size * image_size) / 2


def stated_radius(value: float) -> float:
    """An L2 radius as results.json states it: 4 significant digits (0.502 at 2/255 and 128 px), the
    value the attacks then run with, so the record and the run agree exactly."""
    return float(f"{value:.4g}")


# The headline attack's AutoAttack-standard budget (Croce & Hein 2020): a profile that runs `strong` with
# less reports its robust accuracies as upper bounds.
FULL_STRENGTH = {"steps": 100, "square_queries": 5000, "n_target_classes": 2}
# `strong`'s own defaults, read from its signature so there is one source for them.
STRONG_DEFAULTS = attack_defaults("strong")


def default_pgd_spec(threat_model: ThreatModel = DEFAULT_THREAT_MODEL) -> AttackSpec:
    """PGD at the default evaluation budget: transfer's default attack and the large-eps check's base."""
    return AttackSpec.build("pgd", eps=threat_model.eps, steps=DEFAULTS.pgd_steps)


def default_attack_specs(
    threat_model: ThreatModel = DEFAULT_THREAT_MODEL,
    settings: EvalSettings = DEFAULTS,
    *,
    image_size: int = 128,
    in_channels: int = 1,
) -> list[AttackSpec]:
    """FGSM, PGD, CW-L2 (minimum norm, scored against the L2 budget), the strong ensemble at one
    L-inf eps, and APGD-L2 at the CW budget's radius (a stronger, cheaper bound for that ball).

    The budgets are `settings`' (`EvalSettings.attack_budgets`): there `strong_steps` / `square_queries`
    None mean `strong`'s own (AutoAttack-standard) budgets, `strong_version` None its own component set
    ("full"); `l2_steps` None means the strong steps.
    """
    b = settings
    eps = float(threat_model.eps)
    radius = stated_radius(
        b.cw_budget if b.cw_budget is not None else cw_l2_budget(eps, image_size, in_channels)
    )
    strong_budget = {
        "steps": b.strong_steps,
        "square_queries": b.square_queries,
        "version": b.strong_version,
    }
    l2_steps = b.l2_steps or b.strong_steps or STRONG_DEFAULTS["steps"]
    return [
        AttackSpec.build("fgsm", eps=eps),
        AttackSpec.build("pgd", eps=eps, steps=b.pgd_steps, restarts=b.pgd_restarts),
        AttackSpec.build(
            "cw", steps=b.cw_steps, binary_steps=b.cw_binary_steps, c=0.1, kappa=0, max_l2=radius
        ),
        AttackSpec.build("strong", eps=eps, **{k: v for k, v in strong_budget.items() if v is not None}),
        AttackSpec.build("apgd", eps=radius, norm="l2", steps=l2_steps, loss="ce"),
    ]


def for_evaluation(spec: AttackSpec) -> AttackSpec:
    """Turn on early stopping where the attack has it and the spec does not say otherwise.

    Untargeted accuracy only asks whether *an* adversarial example exists, so a sample can leave
    the batch at its first success: same accuracy, far fewer gradient steps. (PGD defaults to
    early_stop=false because training wants the highest-loss point, not the first success.)
    """
    if "early_stop" in spec.params or "early_stop" not in inspect.signature(ATTACKS[spec.name]).parameters:
        return spec
    return AttackSpec(spec.name, {**spec.params, "early_stop": True})


def keyed_specs(specs: Sequence[AttackSpec]) -> dict[str, AttackSpec]:
    """Set specs up for evaluation (`for_evaluation`) and key them by attack name: pgd, pgd-2, ..."""
    keyed: dict[str, AttackSpec] = {}
    for spec in specs:
        key, i = spec.name, 2
        while key in keyed:
            key, i = f"{spec.name}-{i}", i + 1
        keyed[key] = for_evaluation(spec)
    return keyed


def spec_at_eps(template: AttackSpec, eps: float) -> AttackSpec:
    """`template` (an attack without eps, or with one to replace) at `eps`, set up for evaluation."""
    return for_evaluation(template.at_eps(eps))


def curve_specs(templates: Sequence[AttackSpec]) -> dict[str, AttackSpec]:
    """Curve templates keyed like attacks (eps left out: each point of a curve sets it)."""
    return keyed_specs([t.without_eps() for t in templates])


def is_cw(spec: AttackSpec) -> bool:
    return spec.name == "cw"


def threat_model_dict(spec: AttackSpec) -> dict | None:
    tm = spec.threat_model()
    return None if tm is None else tm.to_dict()
