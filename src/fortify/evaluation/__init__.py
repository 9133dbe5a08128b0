"""fortify.evaluation: robustness of a checkpoint on its test split, measured honestly.

- `evaluate_model` (= `fortify.evaluate`): the same for any nn.Module or a model file from elsewhere
- `evaluate_checkpoint` -> results.json (+ examples.safetensors); layout in docs/results-schema.md
- `evaluate_transfer` -> one transfer.json pair (crafted on one checkpoint, evaluated on another);
  `add_transfer_checks(results_json, pairs)` attaches its sanity check to the target's results.json
- `attack_checkpoint` -> adversarial PNGs + attacks.json (`fortify attack`)
- `default_attack_specs`, `cw_l2_budget`: the default attacks and the CW L2 budget (threat model)
- `choose_class_bias` / `choose_for_checkpoint`: an operating point (logit offsets) chosen on validation
  images (`fortify operating-point`)
- `EvalSettings`: the threat model and every evaluation budget, defaulted in one place (`settings.DEFAULTS`)
- `metrics`, `sanity`: pure functions, usable on their own
"""

from fortify.evaluation.any_model import evaluate_model
from fortify.evaluation.attack_images import attack_checkpoint
from fortify.evaluation.attack_set import (
    DEFAULT_CURVE_ATTACKS,
    DEFAULT_EPS,
    cw_l2_budget,
    default_attack_specs,
)
from fortify.evaluation.evaluate import DEFAULT_EPS_CURVE, evaluate_checkpoint
from fortify.evaluation.loading import check_out_dir
from fortify.evaluation.operating_point import choose_class_bias, choose_for_checkpoint
from fortify.evaluation.sanity_runs import add_transfer_checks
from fortify.evaluation.settings import EvalSettings
from fortify.evaluation.transfer import evaluate_transfer

__all__ = [
    "DEFAULT_CURVE_ATTACKS",
    "DEFAULT_EPS",
    "DEFAULT_EPS_CURVE",
    "EvalSettings",
    "add_transfer_checks",
    "attack_checkpoint",
    "check_out_dir",
    "choose_class_bias",
    "choose_for_checkpoint",
    "cw_l2_budget",
    "default_attack_specs",
    "evaluate_checkpoint",
    "evaluate_model",
    "evaluate_transfer",
]
