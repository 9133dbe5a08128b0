"""The stages beyond the study (`reproduce --extras explain,detect,certify`): what each runs and reports.

Each extra is a package with a settings class (a `fortify.stage_settings.StageSettings`: validated
`from_dict`, `to_dict`, `PRESETS` for the smoke and quick budgets) and `run_<name>(normal_ckpt,
adversarial_ckpt=None, *, data, split=None, out_dir, settings=None, runtime=None, progress=False,
cache_dir=None, resume=False)` writing ROOT/<name>/<name>.json; the report has `section_<name>`. A
profile's section of the same name holds the settings: `preset` (smoke | quick | defaults) picks the
base, every other key overrides one field, and unknown keys are a one-line error listing the valid ones.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fortify.errors import ConfigError
from fortify.stage_settings import DEFAULTS_PRESET, StageSettings


@dataclass(frozen=True)
class Extra:
    name: str
    title: str
    settings: str  # "module:attribute" of the settings class (a StageSettings: its PRESETS are the presets)
    run: str  # "module:attribute" of run_<name>
    section: str  # "module:attribute" of the report's section_<name>


EXTRAS: dict[str, Extra] = {
    "explain": Extra(
        "explain",
        "explain: class-activation maps, attention shift, cross-architecture transfer",
        "fortify.explain.settings:ExplainSettings",
        "fortify.explain.run:run_explain",
        "fortify.report.explain_section:section_explain",
    ),
    "detect": Extra(
        "detect",
        "detect: Mahalanobis detector, non-adaptive and adaptive attacks",
        "fortify.detect.settings:DetectSettings",
        "fortify.detect.run:run_detect",
        "fortify.report.detect_section:section_detect",
    ),
    "certify": Extra(
        "certify",
        "certify: randomized smoothing",
        "fortify.certify.settings:CertifySettings",
        "fortify.certify.run:run_certify",
        "fortify.report.certify_section:section_certify",
    ),
}


def load(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def parse_extras(value: str | list[str] | None) -> list[str]:
    """'explain,detect' or a list -> validated names in the order the pipeline runs them."""
    if not value:
        return []
    names = [v.strip() for v in (value.split(",") if isinstance(value, str) else value) if v.strip()]
    unknown = [n for n in names if n not in EXTRAS]
    if unknown:
        raise ConfigError(f"unknown extra(s) {', '.join(unknown)}; valid: {', '.join(EXTRAS)}")
    return [n for n in EXTRAS if n in names]


def resolve_settings(name: str, section: dict[str, Any] | None) -> StageSettings:
    """The settings instance for one extra from a profile section ({"preset": ..., field: value})."""
    cls: type[StageSettings] = load(EXTRAS[name].settings)
    preset = (section or {}).get("preset", DEFAULTS_PRESET)
    if preset not in cls.preset_names():  # said as "<name>.preset: ...", not as a field of the section
        raise ConfigError(f"{name}.preset: unknown preset {preset!r}; valid: {', '.join(cls.preset_names())}")
    return cls.from_section(section)


def run_extra(
    name: str, settings: StageSettings, root: Path, *, data: str, runtime: Any, progress: bool
) -> dict:
    """Run one extra on ROOT's two models and split; a partial run left in ROOT/<name> is continued."""
    run = load(EXTRAS[name].run)
    return run(
        root / "normal" / "best.safetensors",
        root / "adversarial" / "best.safetensors",
        data=data,
        split=root / "split.json",
        out_dir=root / name,
        settings=settings,
        runtime=runtime,
        progress=progress,
        resume=True,
    )
