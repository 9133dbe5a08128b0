"""The stages beyond the study (`reproduce --extras explain,detect,certify`): what each runs and reports.

Each extra is a package with a settings dataclass (validated `from_dict`, `to_dict`), presets for the
smoke and quick budgets, and `run_<name>(normal_ckpt, adversarial_ckpt, *, data, split, out_dir,
settings, runtime, progress)` writing ROOT/<name>/<name>.json; the report has `section_<name>`. A
profile's section of the same name holds the settings: `preset` (smoke | quick | defaults) picks the
base, every other key overrides one field, and unknown keys are a one-line error listing the valid ones.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fortify.errors import ConfigError


@dataclass(frozen=True)
class Extra:
    name: str
    title: str
    settings: str  # "module:attribute" of the settings class
    presets: dict[str, str]  # preset name -> "module:attribute" of a settings instance
    run: str  # "module:attribute" of run_<name>
    section: str  # "module:attribute" of the report's section_<name>


EXTRAS: dict[str, Extra] = {
    "explain": Extra(
        "explain",
        "explain: class-activation maps, attention shift, cross-architecture transfer",
        "fortify.explain.run:ExplainSettings",
        {"smoke": "fortify.explain.run:SMOKE", "quick": "fortify.explain.run:QUICK"},
        "fortify.explain.run:run_explain",
        "fortify.report.explain_section:section_explain",
    ),
    "detect": Extra(
        "detect",
        "detect: Mahalanobis detector, non-adaptive and adaptive attacks",
        "fortify.detect.settings:DetectSettings",
        {"smoke": "fortify.detect.settings:SMOKE", "quick": "fortify.detect.settings:QUICK"},
        "fortify.detect.run:run_detect",
        "fortify.report.detect_section:section_detect",
    ),
    "certify": Extra(
        "certify",
        "certify: randomized smoothing",
        "fortify.certify.settings:CertifySettings",
        {
            "smoke": "fortify.certify.settings:CertifySettings.SMOKE",
            "quick": "fortify.certify.settings:CertifySettings.QUICK",
        },
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


def resolve_settings(name: str, section: dict[str, Any] | None) -> Any:
    """The settings instance for one extra from a profile section ({"preset": ..., field: value})."""
    extra = EXTRAS[name]
    section = dict(section or {})
    preset = section.pop("preset", "defaults")
    cls = load(extra.settings)
    if preset == "defaults":
        base: dict[str, Any] = {}
    elif preset in extra.presets:
        base = load(extra.presets[preset]).to_dict()
    else:
        raise ConfigError(
            f"{name}.preset: unknown preset {preset!r}; valid: defaults, {', '.join(extra.presets)}"
        )
    try:
        return cls.from_dict({**base, **section})
    except ConfigError as e:
        raise ConfigError(f"profile section {name!r}: {e}") from e


def run_extra(name: str, settings: Any, root: Path, *, data: str, runtime: Any, progress: bool) -> dict:
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
    )
