"""`CertifySettings`: every knob of a certification run, recorded in certify.json."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from fortify.errors import ConfigError
from fortify.stage_settings import StageSettings

START_FROM = ("normal", "adversarial")


@dataclass
class CertifySettings(StageSettings):
    STAGE: ClassVar[str] = "certify"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # Seconds on 32 px smallcnn (24 test images): a check that the stage runs, not a result.
        "smoke": {
            "finetune_epochs": 1,
            "n0": 10,
            "n": 50,
            "batch_size": 100,
            "limit": 24,
            "radii": [0.1, 0.2],
            "attack_steps": 2,
            "attack_samples": 2,
            "attack_n": 20,
            "unit_size": 8,
        },
        # ResNet18 128 px on 2 shared CPU cores (~11 ms per forward pass): n=1000 on all 158 test images
        # would take about half an hour, so quick certifies a class-stratified 48 with n=500 (minutes, not
        # a benchmark).
        "quick": {
            "finetune_epochs": 3,
            "n": 500,
            "limit": 48,
            "attack_steps": 5,
            "attack_samples": 4,
            "attack_n": 100,
            "unit_size": 8,
        },
    }

    sigma: float = 0.25  # Gaussian noise std in [0,1] pixel units (training and smoothing)
    finetune_epochs: int = 3  # noise-mode fine-tuning of the start checkpoint; 0 certifies it as is
    finetune_lr: float = 1e-3
    finetune_batch_size: int = 32
    start_from: str = "normal"  # which checkpoint the smoothing model starts from
    n0: int = 100  # votes that select the class
    n: int = 1000  # votes that bound its probability
    alpha: float = 0.001  # the certificate fails with probability <= alpha per image
    batch_size: int = 200  # noisy copies per forward pass
    limit: int | None = None  # k test images, class-stratified, spread over each class; None = all
    # Reported L2 radii; the threat model's eps*sqrt(d)/2 and eps*sqrt(d) (0.502 and 1.004 at 128 px, 2/255)
    # are always added.
    radii: list[float] = field(default_factory=lambda: [0.125, 0.25, 0.375])
    eps: float = 2 / 255  # the empirical L-inf threat model, converted to L2 radii for comparison
    attack_steps: int = 10  # smoothed PGD steps
    attack_samples: int = 8  # noise samples per PGD step (EOT)
    attack_n: int | None = None  # votes that judge the attacked image; None -> n
    unit_size: int = 8  # test images per work unit (kept in out/units/: resume, torchrun sharding)
    seed: int = 0

    def validate(self) -> CertifySettings:
        if not (self.sigma > 0 and math.isfinite(self.sigma)):
            raise ConfigError(f"sigma must be a number > 0, got {self.sigma}")
        if not 0 < self.alpha < 0.5:
            raise ConfigError(f"alpha must be in (0, 0.5), got {self.alpha}")
        for name in ("n0", "n", "batch_size", "attack_steps", "attack_samples", "unit_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.attack_n is not None and self.attack_n < 1:
            raise ConfigError(f"attack-n must be >= 1, got {self.attack_n}")
        if self.finetune_epochs < 0:
            raise ConfigError(f"finetune-epochs must be >= 0, got {self.finetune_epochs}")
        if self.finetune_epochs > 0 and not (self.finetune_lr > 0 and self.finetune_batch_size >= 2):
            raise ConfigError("finetune-lr must be > 0 and finetune-batch-size >= 2")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be >= 1, got {self.limit}")
        if not self.radii or any(not (r >= 0 and math.isfinite(r)) for r in self.radii):
            raise ConfigError(f"radii must be a non-empty list of L2 radii >= 0, got {self.radii}")
        if not 0 < self.eps <= 1:
            raise ConfigError(f"eps must be in (0, 1] (pixel units, e.g. 2/255), got {self.eps}")
        if self.start_from not in START_FROM:
            raise ConfigError(f"start_from must be one of {', '.join(START_FROM)}, got {self.start_from!r}")
        return self

    @property
    def votes_under_attack(self) -> int:
        return self.attack_n or self.n

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> CertifySettings:
        """As every stage's, with the radii as floats (a profile may write 1 for 1.0)."""
        d = dict(d or {})
        if "radii" in d and set(d) <= set(cls.field_names()):  # unknown keys: the base's error
            d["radii"] = [float(r) for r in d["radii"]]
        return super().from_dict(d)
