"""EvalSettings: the threat model and every budget of an evaluation, defaulted here and nowhere else.

`evaluate_checkpoint(checkpoint, data=..., settings=...)` takes one of these; `default_attack_specs`,
`fortify evaluate`'s option defaults and a profile's `evaluate:` section all read it: a profile states
only what it changes, and anything it leaves out is the value below (tests/evaluation/test_settings.py
checks that no other place restates one). Attacks are typed `AttackSpec`s, never text: a person's text
is parsed once, where it is written (the CLI's options, a profile file, `--set`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from fortify.attacks import PATIENT_ATTACKS, AttackSpec, ThreatModel
from fortify.errors import ConfigError
from fortify.evaluation.units import DEFAULT_UNIT_SIZE
from fortify.number_text import parse_number
from fortify.stage_settings import StageSettings

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
# Set from a profile's top level (its `eps` and `seed`), so its `evaluate:` record leaves them out.
FROM_PROFILE_TOP_LEVEL = ("threat_model", "seed")
# Fields added after run directories were first written: a record states them only when changed, so a
# run recorded before they existed still resumes (pipeline.run_config compares records).
RECORDED_WHEN_CHANGED = ("large_eps", "unit_size", "patient_rule", "joint_attack")
# The patient-level fields: per-image work units do not depend on them (evaluate's unit fingerprint
# leaves them out; the joint attack's units are named by what they depend on, patient_run.py).
PATIENT_FIELDS = ("patient_rule", "joint_attack")


def _joint_template() -> AttackSpec:
    return AttackSpec.template("joint-pgd")


def _curve_templates() -> list[AttackSpec]:
    return [AttackSpec.template("pgd", steps=10), AttackSpec.template("strong", steps=10, square_queries=100)]


@dataclass
class EvalSettings(StageSettings):
    """Threat model and budgets for `fortify.evaluation.evaluate_checkpoint`."""

    STAGE: ClassVar[str] = "evaluate"
    SPEC_FIELDS: ClassVar[dict[str, str]] = {
        "attacks": "specs",
        "curve_attacks": "templates",
        "transfer_attack": "spec",
        "joint_attack": "template",
    }
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # Seconds on a 32 px smallcnn: proves the evaluation runs end to end; its numbers mean nothing.
        "smoke": {
            "pgd_steps": 3,
            "cw_steps": 5,
            "cw_binary_steps": 2,
            "strong_steps": 3,
            "square_queries": 10,
            "l2_steps": 3,
            "eps_curve": [0, 2 / 255, 8 / 255],
            "curve_attacks": ["pgd:steps=3"],
            "examples_per_class": 1,
            "limit": 24,
            "sanity_restarts": 1,
        },
    }

    # The headline threat model: the default attacks (FGSM, PGD, strong) run in this L-inf ball, CW and
    # APGD-L2 in the L2 ball of the same corner length (see evaluation.attack_set).
    threat_model: ThreatModel = ThreatModel("linf", 2 / 255)
    attacks: list[AttackSpec] | None = None  # explicit attacks; None -> FGSM, PGD, CW, strong, APGD-L2
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
    # A curve attacks at every eps, so it gets its own (smaller) step budgets: templates without eps.
    curve_attacks: list[AttackSpec] = field(default_factory=_curve_templates)
    # An image fooled at one eps keeps its example at every larger eps and is not attacked again there
    # (a point = robust at every eps up to it); False attacks every eps independently over all images.
    curve_cumulative: bool = True
    batch_size: int = 64
    limit: int | None = None  # first k test images (class-stratified); None = the whole test split
    examples_per_class: int = 2
    sanity_steps_factor: int = 2
    sanity_restarts: int = 2
    large_eps: float = 1.0  # the "accuracy falls to ~0" sanity check attacks at this L-inf eps
    transfer_attack: AttackSpec | None = None  # None -> the PGD spec of `attacks`
    seed: int = 0
    # Images per work unit (fortify.evaluation.units): the grain of resuming and of sharing the work out
    # among processes; results depend on it (a unit's seeds and batches), never on the processes.
    unit_size: int = DEFAULT_UNIT_SIZE
    # Patient level (fortify.evaluation.patients): how a patient's slices decide, "mean" (argmax of the
    # mean softmax probability), "vote" or "max:<class>"; and the joint attack on that decision, a
    # template (eps: the threat model's; steps, where it names none: the headline PGD's). None (or
    # "none") runs no joint attack.
    patient_rule: str = "mean"
    joint_attack: AttackSpec | None = field(default_factory=_joint_template)

    def __post_init__(self) -> None:
        if isinstance(self.joint_attack, str) and self.joint_attack.strip().lower() in ("none", ""):
            self.joint_attack = None
        super().__post_init__()

    def validate(self) -> EvalSettings:
        self.eps_curve = [float(e) for e in self.eps_curve]  # numbers, never ints and floats mixed
        for name in ("attacks", "curve_attacks"):
            specs = getattr(self, name)
            if specs is not None and not all(isinstance(s, AttackSpec) for s in specs):
                raise ConfigError(f"evaluate.{name} must hold AttackSpecs (text is parsed when made)")
        if not isinstance(self.unit_size, int) or self.unit_size < 1:
            raise ConfigError(f"evaluate.unit_size must be a whole number >= 1, got {self.unit_size!r}")
        if any(spec.name in PATIENT_ATTACKS for spec in self.attacks or []):
            raise ConfigError("evaluate.attacks: joint-pgd attacks a whole patient; set it as joint_attack")
        if self.joint_attack is not None and self.joint_attack.name not in PATIENT_ATTACKS:
            raise ConfigError(
                f"evaluate.joint_attack must be a patient attack ({', '.join(sorted(PATIENT_ATTACKS))}), "
                f"got {self.joint_attack.name}"
            )
        rule = self.patient_rule
        if not isinstance(rule, str) or not (rule in ("mean", "vote") or rule.startswith("max:")):
            raise ConfigError(f"evaluate.patient_rule must be mean, vote or max:<class>, got {rule!r}")
        if self.score_precision not in ("fp32", "bf16", "attack"):
            raise ConfigError(f"score precision must be fp32, bf16 or attack, got {self.score_precision!r}")
        return self

    @property
    def eps(self) -> float:
        return float(self.threat_model.eps)

    def attack_budgets(self) -> dict[str, Any]:
        """The keyword arguments `default_attack_specs` takes from these settings."""
        return {name: getattr(self, name) for name in ATTACK_BUDGET_FIELDS}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> EvalSettings:
        """As StageSettings.from_dict, and numbers written as text ("2/255") read with parse_number, the
        threat model from its record ({"norm": "linf", "eps": ...})."""
        d = dict(d or {})
        if isinstance(d.get("threat_model"), dict):
            tm = d["threat_model"]
            d["threat_model"] = ThreatModel(
                str(tm.get("norm", "linf")), parse_number(tm["eps"], "evaluate.eps")
            )
        if d.get("eps_curve") is not None:
            d["eps_curve"] = [parse_number(e, "evaluate.eps_curve") for e in d["eps_curve"]]
        if d.get("cw_budget") is not None:
            d["cw_budget"] = parse_number(d["cw_budget"], "evaluate.cw_budget")
        return super().from_dict(d)

    def profile_record(self) -> dict[str, Any]:
        """The `evaluate:` section of a run's config.yaml (FROM_PROFILE_TOP_LEVEL, RECORDED_WHEN_CHANGED)."""
        out = self.to_dict()
        for name in FROM_PROFILE_TOP_LEVEL:
            out.pop(name)
        defaults = DEFAULTS.to_dict()
        for name in RECORDED_WHEN_CHANGED:
            if out[name] == defaults[name]:
                out.pop(name)
        return out


DEFAULTS = EvalSettings()
