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
import re
from collections.abc import Sequence

from fortify.attacks import ATTACKS, AttackSpec, attack_defaults, parse_spec
from fortify.evaluation.settings import DEFAULTS

DEFAULT_EPS = 2 / 255
DEFAULT_CURVE_ATTACKS = tuple(DEFAULTS.curve_attacks)
# The study's pooled adversarial set ("combined") is made of these attacks' outputs.
COMBINED_ATTACKS = ("fgsm", "pgd", "cw")


def cw_l2_budget(eps: float, image_size: int, in_channels: int = 1) -> float:
    return eps * math.sqrt(in_channels * image_size * image_size) / 2


def fraction_text(value: float) -> str:
    """`2/255` when value is a whole number of 8-bit levels, else a short decimal (parse_spec reads both)."""
    levels = value * 255
    if abs(levels - round(levels)) < 1e-9 and round(levels) != 0:
        return f"{round(levels)}/255"
    return f"{value:.6g}"


# The headline attack's AutoAttack-standard budget (Croce & Hein 2020): a profile that runs `strong` with
# less reports its robust accuracies as upper bounds.
FULL_STRENGTH = {"steps": 100, "square_queries": 5000, "n_target_classes": 2}
# `strong`'s own defaults, read from its signature so there is one source for them.
STRONG_DEFAULTS = attack_defaults("strong")


def default_pgd_spec(eps: float = DEFAULT_EPS) -> str:
    """PGD at the default evaluation budget: transfer's default attack and the large-eps check's base."""
    return f"pgd:eps={fraction_text(eps)},steps={DEFAULTS.pgd_steps}"


def default_attack_specs(
    eps: float = DEFAULT_EPS,
    *,
    image_size: int = 128,
    in_channels: int = 1,
    pgd_steps: int = DEFAULTS.pgd_steps,
    pgd_restarts: int = DEFAULTS.pgd_restarts,
    cw_steps: int = DEFAULTS.cw_steps,
    cw_binary_steps: int = DEFAULTS.cw_binary_steps,
    cw_budget: float | None = DEFAULTS.cw_budget,
    strong_steps: int | None = DEFAULTS.strong_steps,
    square_queries: int | None = DEFAULTS.square_queries,
    l2_steps: int | None = DEFAULTS.l2_steps,
    strong_version: str | None = DEFAULTS.strong_version,
) -> list[str]:
    """FGSM, PGD, CW-L2 (minimum norm, scored against the L2 budget), the strong ensemble at one
    L-inf eps, and APGD-L2 at the CW budget's radius (a stronger, cheaper bound for that ball).

    The budgets default to EvalSettings' (pass `**settings.attack_budgets()` for a profile's): there
    `strong_steps` / `square_queries` are None, i.e. `strong`'s own (AutoAttack-standard) budgets,
    `strong_version` None its own component set ("full"); `l2_steps` None means the strong steps.
    """
    e = fraction_text(eps)
    budget = cw_budget if cw_budget is not None else cw_l2_budget(eps, image_size, in_channels)
    strong = f"strong:eps={e}"
    if strong_steps is not None:
        strong += f",steps={strong_steps}"
    if square_queries is not None:
        strong += f",square_queries={square_queries}"
    if strong_version is not None:
        strong += f",version={strong_version}"
    l2 = l2_steps or strong_steps or STRONG_DEFAULTS["steps"]
    return [
        f"fgsm:eps={e}",
        f"pgd:eps={e},steps={pgd_steps},restarts={pgd_restarts}",
        f"cw:steps={cw_steps},binary_steps={cw_binary_steps},c=0.1,kappa=0,max_l2={budget:.4g}",
        strong,
        f"apgd:eps={budget:.4g},norm=l2,steps={l2},loss=ce",
    ]


def for_evaluation(spec: AttackSpec) -> AttackSpec:
    """Turn on early stopping where the attack has it and the spec does not say otherwise.

    Untargeted accuracy only asks whether *an* adversarial example exists, so a sample can leave
    the batch at its first success: same accuracy, far fewer gradient steps. (PGD defaults to
    early_stop=false because training wants the highest-loss point, not the first success.)
    """
    if "early_stop" in spec.params or "early_stop" not in inspect.signature(ATTACKS[spec.name]).parameters:
        return spec
    return spec.replace(early_stop=True)


def keyed_specs(specs: Sequence[str | AttackSpec]) -> dict[str, AttackSpec]:
    """Parse specs (SpecError on the first bad one), set them up for evaluation (`for_evaluation`)
    and key them by attack name: pgd, pgd-2, ..."""
    keyed: dict[str, AttackSpec] = {}
    for text in specs:
        spec = for_evaluation(parse_spec(text) if isinstance(text, str) else text)
        key, i = spec.name, 2
        while key in keyed:
            key, i = f"{spec.name}-{i}", i + 1
        keyed[key] = spec
    return keyed


def spec_at_eps(template: str | AttackSpec, eps: float) -> AttackSpec:
    """`template` ("pgd:steps=10", "strong") with its eps set to `eps` (validated by parse_spec)."""
    text = str(template).strip()
    if not re.search(r"(^|[:,])\s*eps\s*=", text):  # not "steps=" ...
        text += ("," if ":" in text else ":") + f"eps={eps!r}"
    return for_evaluation(parse_spec(text).replace(eps=float(eps)))


def curve_specs(templates: Sequence[str | AttackSpec]) -> dict[str, AttackSpec]:
    """Curve templates keyed like attacks; parsed at eps=1/255 so a typo fails before any work."""
    keyed = keyed_specs([spec_at_eps(t, 1 / 255) for t in templates])
    return keyed


def is_cw(spec: AttackSpec) -> bool:
    return spec.name == "cw"


def threat_model_dict(spec: AttackSpec) -> dict | None:
    tm = spec.threat_model()
    return None if tm is None else {"norm": tm.norm, "eps": float(tm.eps)}
