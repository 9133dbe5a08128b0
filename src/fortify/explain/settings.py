"""`ExplainSettings`: every budget and choice of the explain stage, validated, with two presets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from fortify.attacks import AttackSpec
from fortify.errors import ConfigError
from fortify.explain.cam import check_method
from fortify.models import list_models
from fortify.stage_settings import StageSettings

TARGETS = ("predicted", "true")


@dataclass
class ExplainSettings(StageSettings):
    STAGE: ClassVar[str] = "explain"
    SPEC_FIELDS: ClassVar[dict[str, str]] = {"attack": "spec"}
    # smoke: seconds on 32 px smallcnn (24 test images). quick (the defaults): ResNet18 at 128 px, all 158
    # test images, about 10 CPU-minutes on 2 cores (fp32), 7 of them the smallcnn surrogate (3 epochs at
    # 128 px + crafting).
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {
            "attack": "pgd:eps=2/255,steps=3",
            "limit": 24,
            "n_boot": 500,
            "figure_per_class": 1,
            "surrogate_epochs": 1,
        },
        "quick": {},
    }

    method: str = "gradcam"  # gradcam | gradcam++ | xgradcam | eigencam | layercam
    target: str = "predicted"  # class each map explains: the model's prediction on that image, or the truth
    # white-box on each model, and crafted on the surrogate
    attack: AttackSpec = field(default_factory=lambda: AttackSpec.build("pgd", eps=2 / 255, steps=10))
    limit: int | None = None  # first N test images, class-stratified; None = the whole test split
    batch_size: int = 32
    grid: int = 32  # maps are area-averaged to at most grid x grid cells before the metrics
    top_fraction: float = 0.10
    n_boot: int = 2000
    figure_per_class: int = 2  # images per class in each model's figure
    amplify: float = 50.0  # perturbation shown as 0.5 + amplify * (x_adv - x)
    surrogate: str = "smallcnn"  # registry architecture for cross-architecture transfer, or "none"
    surrogate_epochs: int = 3
    surrogate_lr: float = 0.002
    surrogate_batch_size: int = 32
    surrogate_limit_per_class: int | None = None
    seed: int = 0

    def validate(self) -> ExplainSettings:
        check_method(self.method)
        if self.target not in TARGETS:
            raise ConfigError(f"unknown CAM target {self.target!r}; choose one of {', '.join(TARGETS)}")
        if not isinstance(self.attack, AttackSpec):
            raise ConfigError("explain.attack must be an attack spec (text is parsed when made)")
        if self.attack.threat_model() is None:
            raise ConfigError(f"attack {str(self.attack)!r} has no threat model (give CW a max_l2)")
        if self.surrogate != "none" and self.surrogate not in list_models():
            raise ConfigError(
                f"unknown surrogate {self.surrogate!r}; choose one of {', '.join([*list_models(), 'none'])}"
            )
        for name in ("batch_size", "grid", "n_boot", "surrogate_epochs", "surrogate_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.surrogate_batch_size < 2:
            raise ConfigError("surrogate_batch_size must be >= 2 (batch norm needs two samples)")
        if self.limit is not None and self.limit < 2:
            raise ConfigError(f"limit must be >= 2 (intervals need two images), got {self.limit}")
        if not 0 < self.top_fraction < 0.5:
            raise ConfigError(f"top_fraction must be in (0, 0.5), got {self.top_fraction}")
        if self.figure_per_class < 0 or not self.amplify > 0 or not self.surrogate_lr > 0:
            raise ConfigError("figure_per_class must be >= 0, amplify and surrogate_lr > 0")
        return self
