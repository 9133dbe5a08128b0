"""Which attacks an evaluation runs by default, and how their results are keyed.

Threat model (stated because the study did not): white-box, untargeted, pixel values in [0, 1]
after preprocessing (grayscale, center-square crop, resize to the checkpoint's image size).
- FGSM, PGD and strong: L-inf ball of radius eps (headline eps = 2/255).
- CW-L2 is minimum-norm: it is run without a budget, and an image counts as robust under CW
  when the smallest successful L2 perturbation exceeds the budget
      B = eps * sqrt(C * H * W) / 2,
  half the L2 length of an L-inf perturbation that moves every pixel by eps (the corner of the
  L-inf ball). At eps = 2/255 and 128x128x1 that is B = 0.502, the same order as the 0.5 used
  for L2 robustness on CIFAR-10, scaled with the image and the L-inf budget.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Sequence

from fortify.attacks import ATTACKS, AttackSpec, parse_spec

DEFAULT_EPS = 2 / 255
# Curves attack every eps independently, so they get their own (smaller) step budgets.
DEFAULT_CURVE_ATTACKS = ("pgd:steps=10", "strong:steps=10")
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


def default_attack_specs(
    eps: float = DEFAULT_EPS,
    *,
    image_size: int = 128,
    in_channels: int = 1,
    pgd_steps: int = 20,
    pgd_restarts: int = 1,
    cw_steps: int = 50,
    cw_binary_steps: int = 4,
    cw_budget: float | None = None,
    strong_steps: int | None = 25,
) -> list[str]:
    """FGSM, PGD-20, budgeted CW-L2 and the strong ensemble at one L-inf eps.

    Step budgets default to the quick profile's (configs/profiles/quick.yaml) so a default
    evaluation stays affordable on a 2-core CPU; `strong_steps=None` uses the attack's own default.
    """
    e = fraction_text(eps)
    budget = cw_budget if cw_budget is not None else cw_l2_budget(eps, image_size, in_channels)
    return [
        f"fgsm:eps={e}",
        f"pgd:eps={e},steps={pgd_steps},restarts={pgd_restarts}",
        f"cw:steps={cw_steps},binary_steps={cw_binary_steps},c=0.1,kappa=0,max_l2={budget:.4g}",
        f"strong:eps={e}" + (f",steps={strong_steps}" if strong_steps is not None else ""),
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
