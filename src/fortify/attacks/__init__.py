"""fortify.attacks: adversarial attacks as pure functions over [0, 1] image tensors.

Every attack has the form `attack(model, x, y, *, <threat model and settings>) -> x_adv`. Attacks
put the model in eval mode and restore it, never compute parameter gradients, clip to [0, 1],
project into the threat model and keep x's shape, dtype, device and memory layout. They do not
enter autocast: wrap calls in `runtime.autocast()` for bf16.
"""

from fortify.attacks import spec as _spec
from fortify.attacks.apgd import apgd
from fortify.attacks.cw import CWResult, cw_l2, cw_l2_detailed
from fortify.attacks.fgsm import fgsm
from fortify.attacks.joint import joint_pgd, patient_decision
from fortify.attacks.pgd import pgd
from fortify.attacks.spec import (
    AttackResult,
    AttackSpec,
    ThreatModel,
    attack_defaults,
    format_value,
    parse_spec,
    run_attack,
    run_attack_detailed,
    spec_name,
)
from fortify.attacks.square import square
from fortify.attacks.strong import StrongResult, strong, strong_detailed
from fortify.attacks.trades import trades_kl

ATTACKS = _spec.ATTACKS
ATTACKS.update({"fgsm": fgsm, "pgd": pgd, "cw": cw_l2, "apgd": apgd, "square": square, "strong": strong})
# Attacks on a patient's decision (x = all slices of ONE scan, y its one label): not per-image attacks,
# so evaluation runs them per patient (fortify.evaluation.patient_run), never as headline attacks.
ATTACKS.update({"joint-pgd": joint_pgd})
PATIENT_ATTACKS = _spec.PATIENT_ATTACKS
_spec.DETAILED.update({"cw": cw_l2_detailed})

__all__ = [
    "ATTACKS",
    "AttackResult",
    "AttackSpec",
    "CWResult",
    "PATIENT_ATTACKS",
    "StrongResult",
    "ThreatModel",
    "apgd",
    "attack_defaults",
    "cw_l2",
    "cw_l2_detailed",
    "fgsm",
    "format_value",
    "joint_pgd",
    "parse_spec",
    "patient_decision",
    "pgd",
    "run_attack",
    "run_attack_detailed",
    "spec_name",
    "square",
    "strong",
    "strong_detailed",
    "trades_kl",
]
