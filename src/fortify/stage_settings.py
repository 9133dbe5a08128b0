"""`StageSettings`: the one way every stage (evaluate, explain, detect, certify) states its budgets.

A stage's settings are a plain dataclass subclassing this one. Its field defaults are the stage's
defaults and nothing else restates them; `PRESETS` names the changes a preset makes to them (smoke,
quick, ...); `from_dict` builds a validated instance from a profile section or JSON, refusing unknown
keys with a one-line error that lists the valid ones; `preset(name, **changes)` is a preset with some
fields changed. Every stage entry point takes one such object:

    evaluate_checkpoint(checkpoint, data=..., settings=EvalSettings.preset("smoke"))
    run_certify(normal, adversarial, data=..., out_dir=..., settings=CertifySettings.preset("quick"))

Attacks are typed: a field named in `SPEC_FIELDS` holds `AttackSpec`s. Text written in a profile, a
`--set`, a JSON record or a notebook becomes one at construction (`__post_init__`, `parse_spec`), once;
`to_dict` writes the one text form back for records. Every stage only ever sees AttackSpec objects.

Imports only errors and fortify.attacks' spec module (attacks import nothing above the leaf modules).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar, TypeVar

from fortify.attacks.spec import AttackSpec, parse_spec
from fortify.errors import ConfigError, SpecError

S = TypeVar("S", bound="StageSettings")
DEFAULTS_PRESET = "defaults"


@dataclass
class StageSettings:
    STAGE: ClassVar[str] = "stage"  # the profile section and error-message prefix ("evaluate", "certify")
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}  # preset name -> field changes from the defaults
    # field -> "spec" | "specs" (a list) | "template" | "templates" (eps left out: each use sets it)
    SPEC_FIELDS: ClassVar[dict[str, str]] = {}

    def __post_init__(self) -> None:
        # Attack text given to a settings object (a profile, --set, a JSON record, a notebook's
        # `ExplainSettings(attack="pgd:...")`) is parsed here, at construction, once.
        for name, kind in self.SPEC_FIELDS.items():
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, _typed_specs(value, kind, f"{self.STAGE}.{name}"))

    def validate(self: S) -> S:
        """Raise ConfigError (one line) on a value the stage cannot run with; return self."""
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML-ready: attack specs as their one text form (`str(spec)`), everything else copied."""
        return {f.name: _as_record(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls: type[S], d: dict[str, Any] | None) -> S:
        """A validated instance from a mapping (a profile section, a JSON record); unknown keys refused."""
        d = {k: list(v) if isinstance(v, tuple) else copy.deepcopy(v) for k, v in dict(d or {}).items()}
        valid = cls.field_names()
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise ConfigError(
                f"unknown {cls.STAGE} setting(s) {', '.join(unknown)}; valid: {', '.join(valid)}"
            )
        return cls(**d).validate()  # __post_init__ parses attack text

    @classmethod
    def preset_names(cls) -> list[str]:
        return [DEFAULTS_PRESET, *cls.PRESETS]

    @classmethod
    def preset(cls: type[S], name: str = DEFAULTS_PRESET, **changes: Any) -> S:
        """The preset `name` ("defaults" = the field defaults) with `changes` applied, validated."""
        if name != DEFAULTS_PRESET and name not in cls.PRESETS:
            raise ConfigError(
                f"{cls.STAGE}.preset: unknown preset {name!r}; valid: {', '.join(cls.preset_names())}"
            )
        return cls.from_dict({**cls.PRESETS.get(name, {}), **changes})

    @classmethod
    def from_section(cls: type[S], section: dict[str, Any] | None) -> S:
        """A profile section: `preset` (default "defaults") picks the base; other keys change fields."""
        section = dict(section or {})
        name = section.pop("preset", DEFAULTS_PRESET)
        try:
            return cls.preset(name, **section)
        except ConfigError as e:
            raise ConfigError(f"profile section {cls.STAGE!r}: {e}") from e

    def replace(self: S, **changes: Any) -> S:
        """A validated copy with some fields changed."""
        return replace(self, **changes).validate()


def _typed_specs(value: Any, kind: str, where: str) -> Any:
    """Text (or a list of texts) as AttackSpecs; specs already typed pass through."""
    template = kind.startswith("template")

    def one(v: Any) -> AttackSpec:
        if isinstance(v, AttackSpec):
            return v
        try:
            return parse_spec(str(v), template=template)
        except SpecError as e:
            raise SpecError(f"{where}: {e}") from e

    if kind.endswith("s"):
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list of attack specs, got {value!r}")
        return [one(v) for v in value]
    return one(value)


def _as_record(value: Any) -> Any:
    if isinstance(value, AttackSpec):
        return str(value)
    if isinstance(value, list):
        return [_as_record(v) for v in value]
    if hasattr(value, "to_dict"):  # a ThreatModel
        return value.to_dict()
    return copy.deepcopy(value)
