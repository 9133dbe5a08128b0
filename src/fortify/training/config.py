"""`TrainConfig`: every knob of a training run, saved verbatim to RUN_DIR/config.yaml.

Modes:
- `standard`: cross-entropy on clean images.
- `mixed`: the study's recipe. Each batch trains on its clean images plus adversarial versions of
  the same images; the attack rotates batch by batch over FGSM, PGD and CW so every epoch sees
  every attack. The "CW" inside training is the cheap CW-loss variant: L-inf PGD on the
  Carlini-Wagner margin loss (max_{j!=y} z_j - z_y), not the optimization-based CW-L2 attack.
- `pgd`: Madry et al. 2018 PGD adversarial training (adversarial images only).
- `fast`: FGSM with random start, step 1.25*eps (Wong et al. 2020), with a catastrophic-overfitting
  guard: PGD accuracy on the validation split collapsing while FGSM accuracy holds is recorded in
  metrics, warned about and (with co_action="stop") ends training; the best checkpoint, selected
  on PGD accuracy, is the model to use.
- `trades`: Zhang et al. 2019, CE(clean) + beta * KL(f(x) || f(x_adv)), inner max on the KL.
- `mart`: Wang et al. 2020 (MART), boosted CE on PGD examples + beta * KL(clean || adv) weighted by the
  clean model's doubt, 1 - p_y(x); beta is `trades_beta`.
- `noise`: Gaussian data augmentation, CE on x + N(0, noise_sigma^2) (Cohen, Rosenfeld & Kolter 2019): the
  base classifier of a randomized-smoothing model (fortify.certify). Not adversarial: no attack, no eps.

Every adversarial mode crafts its training examples with `craft_bn` batch-norm statistics:
"batch" (default; the attacked batch's own statistics, as in Madry's and Wong's reference code,
so samples of a batch are crafted jointly) or "running" (the eval-mode running statistics, which
lag the weights between recalibrations). Running statistics are never updated by an attack.
"""

from __future__ import annotations

import types
import typing
from dataclasses import asdict, dataclass, fields
from typing import Any

from fortify.errors import ConfigError
from fortify.models import is_model_name, list_models
from fortify.training.batchstats import CRAFT_BN

MODES = ("standard", "mixed", "pgd", "fast", "trades", "mart", "noise")
ADVERSARIAL_MODES = tuple(m for m in MODES if m not in ("standard", "noise"))
SCHEDULES = ("onecycle", "cosine", "constant")
OPTIMIZERS = ("sgd", "adamw")
MIXED_ATTACKS = ("fgsm", "pgd", "cw")
# What the best checkpoint is chosen on: plain accuracy, or balanced accuracy (the mean of the per-class
# recalls), which cannot be won by calling a rare class (benign, ~10% of the images) something else.
# "last" keeps the final epoch: no selection on a validation split too small to select on reliably.
SELECT_ON = ("accuracy", "balanced", "last")
# Fields that say where/how a run executes, not what it computes: they may differ on --resume.
RUN_ONLY_FIELDS = ("out", "device", "data", "cache_dir")


@dataclass
class TrainConfig:
    data: str = "phantom"  # dataset root or "phantom[:n=K]"
    # split manifest; None -> make one (data layer's default seed) in the run dir; "given" -> make one from
    # the dataset's own train/val/test folders there
    split: str | None = None
    model: str = "resnet18"  # a fortify.models registry name
    mode: str = "standard"  # standard | mixed | pgd | fast | trades | mart | noise (see the docstring)
    eps: float = 2 / 255  # L-inf radius in [0,1] pixel units (adversarial modes, robust validation)
    epochs: int = 10  # passes over the training split
    image_size: int = 128  # images are resized to image_size x image_size
    batch_size: int = 64  # global batch; with N processes each takes batch_size // N
    lr: float = 0.05  # peak LR (OneCycle max_lr, cosine start)
    seed: int = 0  # model init, data order, augmentation and training attacks
    out: str = "runs/train"  # run directory (config.yaml, metrics.jsonl, checkpoints)
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    precision: str = "auto"  # auto -> bf16 autocast where the hardware runs it natively
    pretrained: bool = False  # ImageNet weights from torchvision (needs internet; offline: weights)
    weights: str | None = None  # local torchvision state dict (offline ImageNet weights)
    init: str | None = (
        None  # fortify checkpoint to start from (e.g. adversarial fine-tuning of a standard run)
    )
    optimizer: str = "sgd"  # sgd (momentum 0.9, nesterov) | adamw
    weight_decay: float = 5e-4  # decoupled for adamw, L2 for sgd
    schedule: str = "onecycle"  # onecycle | cosine | constant
    class_balanced: bool = False  # weight the loss by inverse class frequency (benign is ~11%)
    balanced_sampling: bool = False  # draw each epoch's images with replacement, every class equally often
    bn_recalibrate: bool = True  # re-estimate batch-norm statistics on clean train images before validation
    augment: bool = True  # random horizontal flip (+ whole-pixel shifts if max_shift > 0), stays in [0,1]
    max_shift: float = 0.0  # largest shift, as a fraction of the image size (0: flips only; see augment.py)
    intensity_jitter: float = 0.0  # contrast/gamma in [1-s, 1+s], brightness in [-s/2, s/2] (0: off)
    max_rotation: float = 0.0  # largest rotation in degrees, bilinear (0: off; it blurs, see augment.py)
    max_zoom: float = 0.0  # random zoom-in crop, factor up to 1 + max_zoom, bilinear (0: off; see augment.py)
    mixup_alpha: float = 0.0  # standard mode: mixup with lam ~ Beta(a, a) per batch (0: off)
    eps_warmup_epochs: float = 1.0  # eps grows linearly from 0 over this many epochs
    attack_steps: int = 5  # PGD/CW/TRADES steps inside training
    attack_alpha: float | None = None  # step size; None -> 2.5*eps/steps (fast: 1.25*eps)
    craft_bn: str = "batch"  # BN statistics training attacks craft against: "batch" | "running"
    mixed_clean_weight: float = 0.5  # mixed/trades-free: loss = w*CE(clean) + (1-w)*CE(adv)
    trades_beta: float = 6.0  # trades and mart modes: weight of the KL (robustness) term
    noise_sigma: float = 0.25  # noise mode: std of the Gaussian noise in [0,1] pixel units
    val_attack_steps: int = 5  # PGD steps for robust validation accuracy (model selection, every epoch)
    val_robust: bool | None = None  # None -> on for adversarial modes, off for standard
    patience: int | None = None  # early stopping: epochs without a better selection score
    select_on: str = "accuracy"  # best.* by val "accuracy", "balanced" (mean recall) or the "last" epoch
    label_smoothing: float = 0.0  # cross-entropy targets: 1 - s on the label, s spread over all classes
    ema_decay: float | None = None  # weight averaging: validate and save an EMA of the weights (per step)
    awp_gamma: float = 0.0  # adversarial weight perturbation (Wu et al. 2020) size; 0: off, theirs 5e-3
    co_action: str = "warn"  # fast mode, catastrophic overfitting: "warn" or "stop"
    limit_per_class: int | None = None  # smoke runs: first k images per class per split
    cache_dir: str | None = None  # decode cache for the real dataset
    tensorboard: bool = False  # also log to RUN_DIR/tb (needs the tensorboard package)

    def validate(self) -> TrainConfig:
        check_field_types(type(self), asdict(self), "training config")
        for name in ("eps", "attack_alpha"):  # a number's text ("2/255") from a profile
            if isinstance(getattr(self, name), str):
                from fortify.number_text import parse_number

                setattr(self, name, parse_number(getattr(self, name), name))
        if self.mode not in MODES:
            raise ConfigError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if not is_model_name(self.model):
            raise ConfigError(
                f"unknown model {self.model!r}; choose one of {', '.join(list_models())} or timm:NAME"
            )
        if not (self.eps >= 0):
            raise ConfigError(f"eps must be >= 0, got {self.eps}")
        if self.eps > 1:
            raise ConfigError(f"eps {self.eps} exceeds the [0,1] pixel range; write e.g. 2/255")
        if not (0 <= self.max_shift < 0.5):
            raise ConfigError(f"max-shift must be in [0, 0.5), got {self.max_shift}")
        if self.mode in ADVERSARIAL_MODES and self.eps == 0:
            raise ConfigError(f"mode {self.mode!r} needs eps > 0")
        for name in ("epochs", "image_size", "batch_size", "attack_steps", "val_attack_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ConfigError("batch-size must be >= 2 (batch norm needs two samples)")
        if not (self.lr > 0):
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.craft_bn not in CRAFT_BN:
            raise ConfigError(f"unknown craft_bn {self.craft_bn!r}; choose one of {', '.join(CRAFT_BN)}")
        if self.co_action not in ("warn", "stop"):
            raise ConfigError(f"co_action must be 'warn' or 'stop', got {self.co_action!r}")
        if not 0 <= self.mixed_clean_weight <= 1:
            raise ConfigError("mixed_clean_weight must be in [0, 1]")
        if not (self.noise_sigma > 0):
            raise ConfigError(f"noise-sigma must be > 0, got {self.noise_sigma}")
        if self.trades_beta < 0 or self.eps_warmup_epochs < 0 or self.weight_decay < 0:
            raise ConfigError("trades_beta, eps_warmup_epochs and weight_decay must be >= 0")
        if self.init is not None and (self.pretrained or self.weights is not None):
            raise ConfigError("init (a fortify checkpoint) excludes pretrained/weights")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ConfigError(f"ema-decay must be in (0, 1), got {self.ema_decay}")
        if not (0 <= self.intensity_jitter < 1):
            raise ConfigError(f"intensity-jitter must be in [0, 1), got {self.intensity_jitter}")
        if not (0 <= self.max_rotation <= 45):
            raise ConfigError(f"max-rotation must be in [0, 45] degrees, got {self.max_rotation}")
        if not (0 <= self.max_zoom <= 1):
            raise ConfigError(f"max-zoom must be in [0, 1] (a zoom of at most 2x), got {self.max_zoom}")
        if self.class_balanced and self.balanced_sampling:
            raise ConfigError("choose class-balanced (loss weights) or balanced-sampling, not both")
        if not (self.mixup_alpha >= 0) or (self.mixup_alpha > 0 and self.mode != "standard"):
            raise ConfigError(f"mixup-alpha must be >= 0 (standard mode only), got {self.mixup_alpha}")
        if not (self.awp_gamma >= 0) or (self.awp_gamma > 0 and not self.adversarial):
            raise ConfigError(f"awp-gamma must be >= 0 (adversarial modes only), got {self.awp_gamma}")
        if self.patience is not None and self.patience < 1:
            raise ConfigError("patience must be >= 1")
        if self.select_on not in SELECT_ON:
            raise ConfigError(f"unknown select-on {self.select_on!r}; choose one of {', '.join(SELECT_ON)}")
        if self.select_on == "last" and (self.patience is not None or self.mode == "fast"):
            raise ConfigError(
                "select-on last keeps the final epoch: it cannot stop early (patience) or keep an epoch "
                "from before catastrophic overfitting (fast mode); choose select-on accuracy or balanced "
                "(a profile: --set adversarial.select_on=accuracy)"
            )
        return self

    @property
    def adversarial(self) -> bool:
        return self.mode in ADVERSARIAL_MODES

    @property
    def robust_validation(self) -> bool:
        return self.adversarial if self.val_robust is None else self.val_robust

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown training config field(s): {', '.join(unknown)}")
        return cls(**d)


def _type_name(hint: Any) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args) + " (or null)"
    if typing.get_origin(hint) in (list, tuple):
        return "a list" + (f" of {_type_name(args[0])}" if args else "")
    if typing.get_origin(hint) is dict:
        return "a mapping"
    return {int: "an integer", float: "a number", str: "text", bool: "true or false"}.get(hint, str(hint))


def _fits(value: Any, hint: Any) -> bool:
    """Whether `value`, as YAML or --set gives it, has the type `hint` (a number's text such as '2/255'
    passes for a float: it is parsed where the field is read)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is Any:
        return True
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        if isinstance(value, str):
            from fortify.number_text import parse_number

            try:
                parse_number(value, "")
            except ConfigError:
                return False
            return True
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        args = typing.get_args(hint)
        return isinstance(value, list | tuple) and all(_fits(v, args[0]) for v in value if args)
    if origin is dict:
        return isinstance(value, dict)
    return True  # a type this check does not know: the field's own validation decides


def check_field_types(cls: type, values: dict[str, Any], where: str, prefix: str = "") -> None:
    """One-line ConfigError naming the first field of dataclass `cls` in `values` whose value has the
    wrong type (`--set train.epochs=abc` must not reach a comparison with an int)."""
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        if name in hints and not _fits(value, hints[name]):
            raise ConfigError(f"{where}: {prefix}{name} must be {_type_name(hints[name])}, got {value!r}")


def config_differences(a: TrainConfig, b: TrainConfig) -> list[str]:
    """Fields (other than where-it-runs fields) whose values differ, as 'name: a != b'."""
    da, db = a.to_dict(), b.to_dict()
    return [f"{k}: {da[k]!r} != {db[k]!r}" for k in da if k not in RUN_ONLY_FIELDS and da[k] != db[k]]
