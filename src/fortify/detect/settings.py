"""`DetectSettings`: every budget and choice of the detection stage, validated, with two presets."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from fortify.attacks import AttackSpec
from fortify.errors import ConfigError, SpecError
from fortify.stage_settings import StageSettings

MODELS = ("normal", "both")


@dataclass
class DetectSettings(StageSettings):
    STAGE: ClassVar[str] = "detect"
    SPEC_FIELDS: ClassVar[dict[str, str]] = {"fit_attacks": "templates"}
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # Seconds on a 32 px smallcnn with 24 test images: plumbing, not numbers.
        "smoke": {
            "models": "both",
            "fit_images": 30,
            "fit_attacks": ["fgsm", "pgd:steps=3"],
            "cross_fit_folds": 3,
            "test_limit": 24,
            "pgd_steps": 3,
            "cw_steps": 5,
            "cw_binary_steps": 1,
            "adaptive_steps": 5,
            "adaptive_lambdas": [1.0],
            "bootstrap": 100,
        },
        # The normal ResNet18 at 128 px, all 158 test images: ~5 CPU-minutes (1 thread, bf16 attacks), most
        # of it in CW and the adaptive attack. Cuts against the defaults, all recorded in detect.json:
        # 100 training images attacked for the head, CW with 2 binary steps, adaptive PGD 50 steps x 2
        # lambdas.
        "quick": {
            "models": "normal",
            "fit_images": 100,
            "fit_attacks": ["fgsm", "pgd:steps=10"],
            "test_limit": None,
            "pgd_steps": 20,
            "cw_steps": 20,
            "cw_binary_steps": 2,
            "adaptive_steps": 50,
            "adaptive_lambdas": [1.0, 10.0],
        },
    }

    seed: int = 0
    models: str = "both"  # "normal" (normal model only) | "both" (normal, then the adversarial one)
    eps: float = 2 / 255  # headline L-inf budget; CW's L2 budget follows from it (evaluation.attack_set)
    layers: list[str] | None = None  # module paths; None = the table in detect.features
    shrinkage: float | str = "auto"  # "auto" = Ledoit-Wolf, or a fixed coefficient in [0, 1]
    preprocess_eps: float = 0.0  # Lee's input preprocessing step; 0 = off (see detect.detector)
    fit_images: int | None = 240  # training images (class-stratified sample) attacked to fit the head
    # attacked at `eps` (templates: eps left out)
    fit_attacks: list[AttackSpec] = field(
        default_factory=lambda: [AttackSpec.template("fgsm"), AttackSpec.template("pgd", steps=10)]
    )
    cross_fit_folds: int = 5  # head fitted on out-of-fold distances (see detect.fit)
    fpr: float = 0.05  # target false-positive rate; threshold from clean VALIDATION images
    test_limit: int | None = None  # class-stratified subset of the test split
    pgd_steps: int = 20
    cw_steps: int = 20
    cw_binary_steps: int = 3
    adaptive_steps: int = 100
    adaptive_lambdas: list[float] = field(default_factory=lambda: [0.1, 1.0, 10.0])
    adaptive_kappa: float = 1.0
    adaptive_alpha: float | None = None  # None = 2.5 * eps / steps
    batch_size: int = 64
    bootstrap: int = 1000  # resamples for the AUROC interval
    unit_size: int = 64  # images per work unit of each attack (resume, torchrun sharding: detect.work)

    def validate(self) -> DetectSettings:
        if self.models not in MODELS:
            raise ConfigError(f"models must be one of {', '.join(MODELS)}, got {self.models!r}")
        if not 0 < self.eps <= 1:
            raise ConfigError(f"eps must be in (0, 1], got {self.eps}")
        if not 0 < self.fpr < 1:
            raise ConfigError(f"fpr must be in (0, 1), got {self.fpr}")
        if self.shrinkage != "auto" and not (
            isinstance(self.shrinkage, (int, float)) and 0 <= float(self.shrinkage) <= 1
        ):
            raise ConfigError(f"shrinkage must be 'auto' or in [0, 1], got {self.shrinkage!r}")
        if self.preprocess_eps < 0 or self.adaptive_kappa < 0:
            raise ConfigError("preprocess_eps and adaptive_kappa must be >= 0")
        if self.adaptive_alpha is not None and not self.adaptive_alpha > 0:
            raise ConfigError(f"adaptive_alpha must be > 0, got {self.adaptive_alpha}")
        for name in ("pgd_steps", "cw_steps", "cw_binary_steps", "adaptive_steps", "batch_size", "unit_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.cross_fit_folds < 2:
            raise ConfigError(f"cross_fit_folds must be >= 2, got {self.cross_fit_folds}")
        for name in ("fit_images", "test_limit"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(f"{name} must be >= 1 or null, got {v}")
        if self.bootstrap < 0:
            raise ConfigError(f"bootstrap must be >= 0, got {self.bootstrap}")
        if not self.adaptive_lambdas or not all(math.isfinite(v) and v >= 0 for v in self.adaptive_lambdas):
            raise ConfigError(
                f"adaptive_lambdas must be a non-empty list of numbers >= 0, got {self.adaptive_lambdas}"
            )
        if not self.fit_attacks:
            raise ConfigError("fit_attacks must name at least one attack")
        for t in self.fit_attacks:
            if not isinstance(t, AttackSpec):
                raise ConfigError("fit_attacks must hold attack specs (text is parsed when made)")
            try:
                spec = t.at_eps(self.eps)
            except SpecError as e:
                raise ConfigError(f"fit_attacks: {e}") from e
            if spec.name not in ("fgsm", "pgd", "apgd"):
                raise ConfigError(f"fit_attacks: use L-inf fgsm, pgd or apgd, got {spec.name!r}")
        return self


# The presets as instances, for `fortify detect --preset` (fortify.cli.detect_command).
SMOKE = DetectSettings.preset("smoke")
QUICK = DetectSettings.preset("quick")
