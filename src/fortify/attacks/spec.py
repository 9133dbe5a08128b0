"""Attack spec strings ("pgd:eps=4/255,steps=20") for the CLI and configs.

Parameter names are checked against the attack function's own signature, so the parser can never
accept a parameter the attack would not take, and values are converted to the type the
signature declares.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from fortify.attacks._common import attack_mode, fooled, logits_f32
from fortify.errors import SpecError
from fortify.number_text import parse_number

# Filled by fortify.attacks.__init__ (spec.py must not import the attack modules: no cycles).
ATTACKS: dict[str, Callable] = {}
# Attacks whose success is not plain misclassification (CW: kappa margin, max_l2 budget) register
# a `*_detailed` twin returning an object with `.x_adv` and `.success`; run_attack_detailed uses it.
DETAILED: dict[str, Callable] = {}
ALIASES = {"cw_l2": "cw", "fgsm_rs": "fgsm"}
# Keyword parameters that are Python objects, not settable from a string.
NOT_IN_SPEC = {"generator", "progress"}
NORMS = ("linf", "l2")
LOSSES_BY_ATTACK = {"pgd": ("ce", "cw", "dlr"), "apgd": ("ce", "dlr")}
PATIENT_ATTACKS = frozenset({"joint-pgd"})  # x = one patient's slices, y its label (attacks/joint.py)
PATIENT_RULE = re.compile(r"mean|vote|max:\d+")  # joint.RULE_PATTERN (spec.py imports no attack)
STRONG_VERSIONS = ("full", "standard")  # fortify.attacks.strong.VERSIONS (spec.py imports no attack)


@dataclass(frozen=True)
class ThreatModel:
    """The set an adversary may move an image within: an L-inf or L2 ball of radius eps in [0,1] pixels."""

    norm: str  # "linf" | "l2"
    eps: float

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise SpecError(f"unknown norm {self.norm!r}; valid: {', '.join(NORMS)}")
        if math.isnan(self.eps) or self.eps < 0:
            raise SpecError(f"eps must be >= 0, got {self.eps}")

    def __str__(self) -> str:
        return f"{self.norm}:eps={format_value(self.eps)}"

    def to_dict(self) -> dict[str, str | float]:
        return {"norm": self.norm, "eps": float(self.eps)}


@dataclass(frozen=True)
class AttackSpec:
    """One attack and its parameters, typed and validated against the attack function's signature.

    Build one in code with `AttackSpec.build("pgd", eps=2/255, steps=10)`, from a person's text with
    `parse_spec("pgd:eps=2/255,steps=10")`. A *template* (`AttackSpec.template("pgd", steps=10)`) leaves
    eps out: each use sets it with `at_eps` (an eps curve). `str(spec)` is the one text form, used for
    records and reports only, and `parse_spec(str(spec)) == spec`.
    """

    name: str
    params: dict[str, float | int | str | bool] = field(default_factory=dict)

    @classmethod
    def build(cls, name: str, /, **params: float | int | str | bool) -> AttackSpec:
        """A validated spec: known attack, known parameters, values of the declared types and ranges."""
        return _make(name, params, template=False)

    @classmethod
    def template(cls, name: str, /, **params: float | int | str | bool) -> AttackSpec:
        """As `build`, but eps may be missing: `at_eps` sets it for each use."""
        return _make(name, params, template=True)

    def at_eps(self, eps: float) -> AttackSpec:
        """A validated copy at `eps` (added after the template's own parameters, or replacing its eps)."""
        return self.replace(eps=float(eps))

    def without_eps(self) -> AttackSpec:
        """The template this spec is an instance of (eps left out)."""
        return AttackSpec(self.name, {k: v for k, v in self.params.items() if k != "eps"})

    @property
    def norm(self) -> str | None:
        """The norm of the ball the attack works in (None for CW, which minimises L2 without one)."""
        if self.name == "cw":
            return None
        return str(self.params.get("norm", _default(self.name, "norm")))

    def threat_model(self) -> ThreatModel | None:
        """The set the adversarial examples live in; None for CW without max_l2 (unbounded)."""
        if self.name == "cw":
            max_l2 = self.params.get("max_l2")
            return None if max_l2 is None else ThreatModel("l2", float(max_l2))
        return ThreatModel(str(self.norm), float(self.params["eps"]))

    def replace(self, **params: float | int | str | bool) -> AttackSpec:
        """A validated copy with some parameters changed (e.g. eps for an eps curve)."""
        return _make(self.name, {**self.params, **params}, template=False)

    def __str__(self) -> str:
        if not self.params:
            return self.name
        return self.name + ":" + ",".join(f"{k}={format_value(v)}" for k, v in self.params.items())


def format_value(value: float | int | str | bool) -> str:
    """The one text form of a spec value or an eps: `2/255` when a float is a whole number of 8-bit
    levels and reads back exactly, short decimals as typed, `true`/`false` for booleans."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if len(repr(value)) <= 8:
            return repr(value)  # short decimals (0.5, 0.001) stay as typed
        k = round(value * 255)
        if k % 255 != 0 and float(k) / 255 == value:
            return f"{k}/255"  # readable and exact: float("4/255" parsed) == 4 / 255
        return repr(value)
    return str(value)


def spec_name(text: str) -> str:
    """The attack a recorded spec text names ("pgd:eps=..." -> "pgd"), without parsing its values."""
    name = text.strip().partition(":")[0].strip().lower()
    return ALIASES.get(name, name)


def _params(name: str) -> dict[str, inspect.Parameter]:
    sig = inspect.signature(ATTACKS[name])
    return {
        p.name: p
        for p in sig.parameters.values()
        if p.kind == inspect.Parameter.KEYWORD_ONLY and p.name not in NOT_IN_SPEC
    }


def _default(name: str, param: str):
    return _params(name)[param].default


def _required(name: str) -> list[str]:
    return [k for k, p in _params(name).items() if p.default is inspect.Parameter.empty]


def attack_defaults(name: str) -> dict[str, float | int | str | bool | None]:
    """An attack's own settable defaults, read from its signature (eps and other required ones left out):
    what a spec that does not name a parameter runs with."""
    return {k: p.default for k, p in _params(name).items() if p.default is not inspect.Parameter.empty}


def _kind(p: inspect.Parameter) -> str:
    """bool/int/float/str from the annotation (a string under postponed annotations)."""
    ann = p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", "")
    for kind in ("bool", "int", "float", "str"):
        if re.search(rf"\b{kind}\b", ann):
            return kind
    return "str"


def _convert(text: str, key: str, kind: str) -> float | int | str | bool:
    if kind == "bool":
        low = text.lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise SpecError(f"{key}={text!r} is not a boolean (true/false)")
    if kind == "int":
        value = parse_number(text, key, error=SpecError)
        if not value.is_integer():
            raise SpecError(f"{key}={text!r} must be a whole number")
        return int(value)
    if kind == "float":
        return parse_number(text, key, error=SpecError)
    return text


def _validate(name: str, params: dict) -> None:
    for key, value in params.items():
        if key in ("eps", "alpha", "lr", "max_l2", "c") and (math.isnan(value) or value < 0):
            raise SpecError(f"{name}: {key} must be >= 0, got {format_value(value)}")
        if key in ("lr", "c", "max_l2") and value == 0:
            raise SpecError(f"{name}: {key} must be > 0")
        if key in ("steps", "restarts", "binary_steps", "n_target_classes", "queries", "chunk") and value < 1:
            raise SpecError(f"{name}: {key} must be >= 1, got {value}")
        if key == "square_queries" and value < 0:
            raise SpecError(f"{name}: square_queries must be >= 0 (0 disables Square), got {value}")
        if key == "p_init" and not 0 < value <= 1:
            raise SpecError(f"{name}: p_init must be in (0, 1], got {format_value(value)}")
        if key == "kappa" and value < 0:
            raise SpecError(f"{name}: kappa must be >= 0, got {format_value(value)}")
        if key == "norm" and value not in NORMS:
            raise SpecError(f"{name}: unknown norm {value!r}; valid: {', '.join(NORMS)}")
        if key == "loss" and value not in LOSSES_BY_ATTACK.get(name, ()):
            raise SpecError(f"{name}: unknown loss {value!r}; valid: {', '.join(LOSSES_BY_ATTACK[name])}")
        if key == "rule" and not PATIENT_RULE.fullmatch(value):
            raise SpecError(f"{name}: unknown rule {value!r}; valid: mean, vote, max:<class index>")
        if key == "version" and value not in STRONG_VERSIONS:
            raise SpecError(f"{name}: unknown version {value!r}; valid: {', '.join(STRONG_VERSIONS)}")


def _check_complete(name: str, params: dict, template: bool) -> None:
    missing = [k for k in _required(name) if k not in params and not (template and k == "eps")]
    if missing:
        raise SpecError(f"{name} needs {', '.join(missing)} (e.g. {name}:{missing[0]}=4/255)")


def _typed(value: object, key: str, kind: str) -> float | int | str | bool:
    """A value given in code, converted to the type the attack declares (an int where a float is
    declared, a whole float where an int is); SpecError for anything else."""
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "int" and isinstance(value, (int, float)) and not isinstance(value, bool):
        if float(value).is_integer():
            return int(value)
        raise SpecError(f"{key}={value!r} must be a whole number")
    if kind == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind == "str" and isinstance(value, str):
        return value
    raise SpecError(f"{key}={value!r} is not a {kind}")


def _make(name: str, params: dict, *, template: bool) -> AttackSpec:
    name = ALIASES.get(name.strip().lower(), name.strip().lower())
    if name not in ATTACKS:
        raise SpecError(f"unknown attack {name!r}; valid: {', '.join(sorted(ATTACKS))}")
    allowed = _params(name)
    typed: dict[str, float | int | str | bool] = {}
    for key, value in params.items():
        if key not in allowed:
            raise SpecError(f"{name} has no parameter {key!r}; valid: {', '.join(allowed)}")
        typed[key] = _typed(value, key, _kind(allowed[key]))
    _validate(name, typed)
    _check_complete(name, typed, template)
    return AttackSpec(name, typed)


def parse_spec(text: str | AttackSpec, *, template: bool = False) -> AttackSpec:
    """Parse what a person wrote, "name:key=value,...", into a validated AttackSpec (SpecError on any
    problem). `template=True` reads a spec without eps (an eps curve's attack: each use sets eps, so one
    written here is dropped). An AttackSpec passes through unchanged: code that already holds one never
    goes back to text."""
    if isinstance(text, AttackSpec):
        return text
    name, _, rest = text.strip().partition(":")
    name = ALIASES.get(name.strip().lower(), name.strip().lower())
    if name not in ATTACKS:
        raise SpecError(f"unknown attack {name!r}; valid: {', '.join(sorted(ATTACKS))}")
    allowed = _params(name)
    params: dict[str, float | int | str | bool] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not key or not value:
            raise SpecError(f"bad parameter {item!r} in {text!r}; write key=value")
        if key not in allowed:
            raise SpecError(f"{name} has no parameter {key!r}; valid: {', '.join(allowed)}")
        if key in params:
            raise SpecError(f"{name}: parameter {key!r} given twice")
        params[key] = _convert(value, key, _kind(allowed[key]))
    if template:  # each use of a template sets eps (`at_eps`): one written here is not the template's
        params.pop("eps", None)
    return _make(name, params, template=template)


def canonical_spec(text: str) -> str:
    """A recorded spec text with every default written out and its parameters sorted, so two texts of one
    attack compare equal ("pgd:eps=2/255,steps=20" and "pgd:eps=2/255,restarts=1,steps=20"); the text as
    it is where it does not parse (an attack this version does not know)."""
    try:
        spec = parse_spec(text)
    except SpecError:
        return text
    params = {**attack_defaults(spec.name), **spec.params}
    return str(AttackSpec(spec.name, {k: params[k] for k in sorted(params) if params[k] is not None}))


def run_attack(
    spec: AttackSpec | str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, **extra
) -> torch.Tensor:
    """Run a spec on one batch; `extra` passes objects a string cannot hold (e.g. generator=)."""
    spec = parse_spec(spec)  # a CLI/test convenience: text is parsed here, an AttackSpec passes through
    return ATTACKS[spec.name](model, x, y, **spec.params, **extra)


class AttackResult(NamedTuple):
    x_adv: torch.Tensor
    success: torch.Tensor  # bool (N,), judged on exactly x_adv


def run_attack_detailed(
    spec: AttackSpec | str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, **extra
) -> AttackResult:
    """Run a spec and judge success on exactly the tensor it returned.

    Success is one forward pass over the returned batch, in eval mode and in whatever precision
    context the caller is in (autocast is neither entered nor left): argmax != y, or == y for a
    targeted spec (y then holds the targets). An attack's own bookkeeping is not trusted because
    it may have judged a different iterate, or the same one in a different batch (a near-tie can
    round either way). CW reports its own success, which also demands the kappa margin and the
    max_l2 budget; cw_l2_detailed confirms it on the returned batch the same way.
    """
    spec = parse_spec(spec)
    if spec.name in DETAILED:
        res = DETAILED[spec.name](model, x, y, **spec.params, **extra)
        return AttackResult(res.x_adv, res.success)
    x_adv = ATTACKS[spec.name](model, x, y, **spec.params, **extra)
    with attack_mode(model), torch.no_grad():
        success = fooled(logits_f32(model, x_adv), y, bool(spec.params.get("targeted", False)))
    return AttackResult(x_adv, success)
