"""Profiles (configs/profiles/*.yaml) loaded into dataclasses.

A profile fixes everything a reproduction computes: model, image size, seeds, the training recipe for both
models and the evaluation budgets. `overrides` (dotted keys, e.g. {"train.epochs": 2}) change single values
and are recorded in RUN_DIR/config.yaml like everything else.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from fortify.attacks import ThreatModel
from fortify.config_files import configs_dir
from fortify.errors import ConfigError
from fortify.evaluation.settings import FROM_PROFILE_TOP_LEVEL, EvalSettings
from fortify.fileio import read_yaml
from fortify.number_text import parse_number
from fortify.pipeline.extras import EXTRAS, load

DEFENSES = ("mixed", "pgd", "fast", "trades", "mart")


@dataclass
class Profile:
    name: str
    description: str = ""
    model: str = "resnet18"
    image_size: int = 128
    seed: int = 0
    fractions: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])
    # What a split keeps on one side: "scan", "near-duplicate" (leaks slices) or "given" (the dataset's
    # own train/val/test folders); DICOM patient tags group whatever the choice.
    grouping: str = "scan"
    window: str = "lung"  # DICOM display window: lung | mediastinum | WIDTH,LEVEL (HU); ignored for others
    eps: float = 2 / 255  # headline L-inf budget (training and evaluation)
    defense: str = "mixed"  # the adversarial model's recipe (DEFENSES); `--defense` overrides it
    limit_per_class: int | None = None
    pretrained: bool = False
    weights: str | None = None  # offline torchvision state dict for pretrained weights
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields for both models
    normal: dict[str, Any] = field(default_factory=dict)  # ... for the normal model only
    adversarial: dict[str, Any] = field(default_factory=dict)  # ... for the adversarial model only
    evaluate: EvalSettings = field(default_factory=EvalSettings)
    extras: list[str] = field(default_factory=list)  # stages beyond the study: explain, detect, certify
    explain: dict[str, Any] = field(default_factory=dict)  # settings of each extra (pipeline.extras)
    detect: dict[str, Any] = field(default_factory=dict)
    certify: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The profile as a run's config.yaml records it: attacks as text, eps and seed at the top level."""
        out = asdict(replace(self, evaluate=EvalSettings()))
        out["evaluate"] = self.evaluate.profile_record()
        return out


def check_defense(name: str, where: str = "") -> str:
    """`name` if it is one of DEFENSES, else ConfigError naming the valid ones."""
    if name not in DEFENSES:
        raise ConfigError(f"{where}unknown defense {name!r}; choose one of {', '.join(DEFENSES)}")
    return name


def list_profiles() -> list[str]:
    return sorted(p.stem for p in (configs_dir() / "profiles").glob("*.yaml"))


def _apply_overrides(raw: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    raw = copy.deepcopy(raw)
    for key, value in (overrides or {}).items():
        node = raw
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key!r}: {p!r} is not a section")
        node[leaf] = value
    return raw


def _check_known(cls, raw: dict[str, Any], where: str) -> None:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(
            f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )


def _build(cls, raw: dict[str, Any], where: str):
    _check_known(cls, raw, where)
    return cls(**raw)


def profile_path(name: str) -> Path:
    """A built-in profile's file (configs/profiles/<name>.yaml), or a user's YAML file given by path."""
    if name.endswith((".yaml", ".yml")) or "/" in name or Path(name).is_file():
        path = Path(name).expanduser()
        if not path.is_file():
            raise ConfigError(f"profile file not found: {name}")
        return path.resolve()
    available = list_profiles()
    if name not in available:
        raise ConfigError(
            f"unknown profile {name!r}; choose one of {', '.join(available)} or give a YAML file's path"
        )
    return configs_dir() / "profiles" / f"{name}.yaml"


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """`--set key=value` pairs -> overrides. Values are read as YAML (numbers, true/false, [lists]);
    '2/255'-style fractions stay text and are converted where the field is read."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value (dotted keys, e.g. train.epochs=5), got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def _check_override_keys(raw: dict[str, Any], overrides: dict[str, Any] | None, where: str) -> None:
    """A misspelt key must not silently add a setting nobody reads: the top level and `evaluate` are
    checked against the dataclasses; train/normal/adversarial keys against TrainConfig's fields."""
    from fortify.training.config import TrainConfig

    sections = {
        "": {f.name for f in fields(Profile)},
        "evaluate": {f.name for f in fields(EvalSettings)} - set(FROM_PROFILE_TOP_LEVEL),
        **{s: {f.name for f in fields(TrainConfig)} for s in ("train", "normal", "adversarial")},
    }
    for key in overrides or {}:
        *parents, leaf = key.split(".")
        section = ".".join(parents)
        if section in EXTRAS:  # each extra's settings class, imported only when one is overridden
            sections[section] = {f.name for f in fields(load(EXTRAS[section].settings))} | {"preset"}
        valid = sections.get(section)
        if valid is None:
            raise ConfigError(
                f"{where}: unknown section {section!r} in {key!r}; sections: "
                + ", ".join([*(s for s in sections if s), *EXTRAS])
            )
        if leaf not in valid:
            label = f"section {section!r}" if section else "the profile's top level"
            raise ConfigError(f"{where}: unknown key {key!r}; valid in {label}: {', '.join(sorted(valid))}")


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`top` over `base`, section by section (a section's keys not in `top` keep the base's values)."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merge(out[key], value) if both else copy.deepcopy(value)
    return out


def _read_raw(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    """A profile file as a mapping; `extends: <profile>` starts from that profile (its name and
    description are not inherited), so a variant states only what it changes."""
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} is not a profile (expected a mapping)")
    base_name = raw.pop("extends", None)
    if base_name is None:
        return raw
    base = Path(str(base_name)).expanduser()
    if base.suffix in (".yaml", ".yml") and not base.is_absolute():
        base_name = path.parent / base  # a file named by the profile that extends it: beside that file
    base_path = profile_path(str(base_name))
    if base_path in (*seen, path):
        raise ConfigError(f"{path}: 'extends' loops back to {base_path.name}")
    inherited = _read_raw(base_path, (*seen, path))
    for key in ("name", "description"):
        inherited.pop(key, None)
    return _merge(inherited, raw)


def _evaluate_settings(section: dict[str, Any], profile: Profile, where: str) -> EvalSettings:
    """The profile's `evaluate:` section as EvalSettings (its attack texts parsed there, once). The threat
    model and seed are the profile's top-level `eps` and `seed` (one value for training and evaluation)."""
    misplaced = sorted(set(section) & set(FROM_PROFILE_TOP_LEVEL))
    if misplaced:
        raise ConfigError(f"{where}: set {', '.join(misplaced)} at the profile's top level (eps, seed)")
    _check_known(EvalSettings, section, where)  # one line naming the known ones; parsing is from_dict's
    top = {"threat_model": ThreatModel("linf", profile.eps), "seed": profile.seed}
    try:
        return EvalSettings.from_dict({**section, **top})
    except ConfigError as e:  # SpecError included: the same type, with where it was written
        raise type(e)(f"{where}: {e}") from e


def _check_types(raw: dict[str, Any], where: str) -> None:
    """A value of the wrong type (`--set train.epochs=abc`, `image_size: big`) as one line naming the key
    and the type it needs, before any stage compares it with a number."""
    from fortify.training.config import TrainConfig, check_field_types

    check_field_types(Profile, {k: v for k, v in raw.items() if k != "evaluate"}, where)
    for section in ("train", "normal", "adversarial"):
        if isinstance(raw.get(section), dict):
            check_field_types(TrainConfig, raw[section], where, prefix=f"{section}.")
    if isinstance(raw.get("evaluate"), dict):
        check_field_types(EvalSettings, raw["evaluate"], where, prefix="evaluate.")


def load_profile(name: str, overrides: dict[str, Any] | None = None) -> Profile:
    """Load a built-in profile (configs/profiles/<name>.yaml) or a user's YAML file, then apply
    dotted-key overrides; ConfigError (one line, naming the valid choices) for anything unknown."""
    path = profile_path(name)
    raw = _read_raw(path, seen=())
    _check_override_keys(raw, overrides, "--set")
    _check_types(_apply_overrides({}, overrides), "--set")  # a wrong --set value named as given
    raw = _apply_overrides(raw, overrides)
    raw.setdefault("name", path.stem)
    ev = raw.pop("evaluate", None) or {}
    if not isinstance(ev, dict):
        raise ConfigError(f"{path}: 'evaluate' must be a mapping")
    _check_types(raw, str(path))
    profile = _build(Profile, {**raw, "evaluate": EvalSettings()}, str(path))
    profile.eps = parse_number(profile.eps, "eps")
    profile.evaluate = _evaluate_settings(ev, profile, f"{path} evaluate")
    profile.fractions = [parse_number(f, "fractions") for f in profile.fractions]
    from fortify.data import SPLIT_GROUPINGS, parse_window

    profile.window = parse_window(profile.window).name
    if profile.grouping not in SPLIT_GROUPINGS:
        raise ConfigError(
            f"{path}: unknown grouping {profile.grouping!r}; choose one of {', '.join(SPLIT_GROUPINGS)}"
        )
    check_defense(profile.defense, f"{path}: ")
    for section in ("train", "normal", "adversarial", *EXTRAS):
        if not isinstance(getattr(profile, section), dict):
            raise ConfigError(f"{path}: {section!r} must be a mapping of settings")
    return profile
