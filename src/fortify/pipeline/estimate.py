"""An honest time budget for `reproduce`: measure this machine, predict every stage, correct as we go.

In its first seconds `reproduce` times one training step, one attack step (forward + backward to the
input) and one forward pass of the profile's model at the profile's sizes, in the run's precision. Each
stage's cost is then a count of images through the model times those per-image seconds:

- training: epochs x (train images x the mode's cost per image + validation images x its attack steps);
- evaluation: the attacks' budgets, each attacked image costing its full budget if it stays robust and
  a few steps if it is fooled early (attacks stop per sample at the first success); the joint attack on
  the patients likewise, every slice of a patient stepping until the patient flips.

The robust share is a guess before anything is measured, so the first estimate can be off by a factor of
two either way. After each stage the ratio of measured to predicted seconds for that kind of stage
(training or evaluation) rescales the stages still to come; the updated total is printed and stored in
RUN_DIR/estimate.json beside the first one, so the estimate itself can be judged afterwards.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from fortify.attacks import AttackSpec
from fortify.progress import fmt_minutes  # noqa: F401  (re-exported: the pipeline prints estimates)
from fortify.runtime import Runtime

# Guesses used until a stage has been measured: the share of test images a model classifies correctly,
# the share of those that survive an attack's whole budget, and the steps an early-stopping attack
# spends on an image it fools (measured on IQ-OTH/NCCD quick runs: most fall within 2-5 steps).
CLEAN_SHARE = 0.9
ROBUST_SHARE = 0.6  # a normally trained model at the headline eps
ADVERSARIAL_ROBUST_SHARE = 0.9  # an adversarially trained one: nearly every image takes the whole budget
STEPS_TO_FOOL = 5
MALIGNANT_SHARE = 0.5  # IQ-OTH/NCCD: 561 of 1,097 slices; the joint attack's targeted run takes these
# Where the attacks run in another precision than the scoring (bf16 attacks, fp32 verdicts), the images
# whose verdicts disagree are attacked again at fp32 (fortify.evaluation.attack_runs.settle). CW's minimal
# perturbations sit on the decision boundary, so about half its images flip (14 of 27 on a 32 px CNN);
# the others' about a tenth.
REATTACK_SHARE = {"cw": 0.5}
REATTACK_SHARE_OTHERS = 0.1
# Seconds an evaluation spends beyond its counted passes (scoring, per-unit bookkeeping, batches that
# early stopping shrank and that cost more per image): counted passes x per-image speed explained
# 1/1.39, 1/1.11 and 1/1.2 of three evaluations' seconds (benchmarks/estimates.py).
EVAL_OVERHEAD = 1.25


@dataclass
class MachineSpeed:
    """Seconds per image on this machine, for the profile's model, image size and precision."""

    train_step: float  # forward + backward + optimizer step, train mode
    gradient: float  # forward + backward to the input, eval mode (one attack step)
    forward: float  # forward only, eval mode
    precision: str
    device: str
    seconds: float  # what measuring cost


def _per_image(fn, batch: int, repeats: int = 2) -> float:
    fn()  # warm-up: first calls allocate and pick kernels
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / (repeats * batch)


def measure_machine(
    model: torch.nn.Module,
    image_size: int,
    in_channels: int,
    runtime: Runtime,
    train_batch: int = 32,
    eval_batch: int = 64,
    *,
    train: bool = True,
) -> MachineSpeed:
    """Time one training step (at the training batch size), one attack step and one forward pass (at the
    evaluation batch size, with batch norm folded as evaluation does), per image, on random inputs.

    `model` is used on a throwaway basis: its weights change (one SGD step), so pass a fresh one.
    `train=False` times only the attack step and the forward pass, on `model` exactly as it is (the
    model an evaluation attacks: already folded where it can be, possibly TorchScript, never changed);
    the training step is then reported as 0."""
    from fortify.models.fuse import fold_batchnorm

    started = time.perf_counter()
    model = runtime.prepare_model(model)
    x = runtime.to_device(torch.rand(train_batch, in_channels, image_size, image_size))
    with torch.no_grad(), runtime.autocast():
        num_classes = model.eval()(x).shape[1]
    y = torch.randint(0, num_classes, (train_batch,), device=runtime.device)

    def train_step() -> None:
        model.train()
        opt.zero_grad(set_to_none=True)
        with runtime.autocast():
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()

    def gradient_step() -> None:
        model.eval()
        xr = x.detach().clone().requires_grad_(True)
        with runtime.autocast():
            loss = torch.nn.functional.cross_entropy(model(xr).float(), y)
        torch.autograd.grad(loss, xr)

    def forward() -> None:
        model.eval()
        with torch.no_grad(), runtime.autocast():
            model(x)

    train_s = 0.0
    if train:
        opt = torch.optim.SGD(model.parameters(), lr=1e-6)
        train_s = _per_image(train_step, train_batch)
        model = runtime.prepare_model(fold_batchnorm(model))  # a copy without parameter gradients
    x = runtime.to_device(torch.rand(eval_batch, in_channels, image_size, image_size))
    y = torch.randint(0, num_classes, (eval_batch,), device=runtime.device)
    grad_s = _per_image(gradient_step, eval_batch)
    fwd_s = _per_image(forward, eval_batch)
    return MachineSpeed(
        train_s, grad_s, fwd_s, runtime.precision, str(runtime.device), time.perf_counter() - started
    )


def _attacked(n: int, steps: float, robust: float = ROBUST_SHARE) -> float:
    """Images through the model for an early-stopping attack of `steps` over n test images."""
    correct = n * CLEAN_SHARE
    return correct * (robust * steps + (1 - robust) * min(steps, STEPS_TO_FOOL))


def attack_passes(s: AttackSpec, n: int, robust: float = ROBUST_SHARE) -> tuple[float, float]:
    """(gradient evaluations, forward passes) an evaluation attack is expected to cost on n images, of
    which about `robust` of the correctly classified survive its whole budget."""
    from fortify.attacks import attack_defaults

    p = {**attack_defaults(s.name), **s.params}  # what the attack runs with, not a restated default
    steps = float(p.get("steps", 1))
    restarts = float(p.get("restarts", 1))
    if s.name == "fgsm":
        return n, 2 * n
    if s.name == "pgd":
        return _attacked(n, steps * restarts, robust), 2 * n
    if s.name == "apgd":
        return _attacked(n, steps * restarts * max(1, int(p["n_target_classes"])), robust), 2 * n
    if s.name == "cw":
        # CW runs unbounded on every image (its minimal L2 is recorded for all): every step of every round.
        return n * steps * float(p["binary_steps"]), 2 * n
    if s.name == "square":
        return 0, n * CLEAN_SHARE * robust * float(p["queries"])
    if s.name == "strong":
        # The version's components (fortify.attacks.strong.VERSIONS), then Square on the survivors. Only
        # APGD-CE, the first, sees every image; the others see the survivors.
        from fortify.attacks.strong import VERSIONS

        after_first = {  # steps per surviving image of each gradient component after APGD-CE
            "apgd-dlr": steps,
            "apgd-t-dlr": steps * 2,  # targeted on both other classes (3-class data)
            "pgd-cw": steps * float(p["pgd_restarts"]),
        }
        later = sum(after_first.get(c, 0.0) for c in VERSIONS[str(p["version"])])
        survivors = n * CLEAN_SHARE * robust
        grads = _attacked(n, steps, robust) + survivors * later
        return grads, survivors * float(p["square_queries"]) + 6 * n
    return _attacked(n, steps, robust), 2 * n


def joint_passes(steps: int, n: int, robust: float = ROBUST_SHARE) -> tuple[float, float]:
    """(gradient evaluations, forward passes) the joint attack on the patients (fortify.evaluation.
    patient_run) is expected to cost over n test slices: like PGD's, every slice of a clean-correct patient
    takes a gradient per step until its patient flips (the slices stop together); each step also judges
    the patient's decision on all its slices (one forward each), and every slice is scored clean and
    attacked. Malignant patients the untargeted run did not send to normal are attacked again, targeted
    at normal (MALIGNANT_SHARE of the slices; most of them take the whole budget)."""
    grads = _attacked(n, float(steps), robust) + _attacked(round(n * MALIGNANT_SHARE), float(steps), 1.0)
    return grads, grads + 2 * n


@dataclass
class StageEstimate:
    name: str
    kind: str  # "train", "eval", "other" or "extra" (explain/detect/certify: not estimated)
    seconds: float  # predicted
    measured: float | None = None


@dataclass
class Budget:
    speed: MachineSpeed
    stages: list[StageEstimate]
    scale: dict[str, float] = field(
        default_factory=lambda: {"train": 1.0, "eval": 1.0, "other": 1.0, "extra": 1.0}
    )
    first_total: float = 0.0

    def __post_init__(self) -> None:
        self.first_total = self.first_total or self.remaining()

    def remaining(self) -> float:
        return sum(s.seconds * self.scale[s.kind] for s in self.stages if s.measured is None)

    def total(self) -> float:
        return sum(s.measured for s in self.stages if s.measured is not None) + self.remaining()

    def skipped(self, name: str) -> None:
        """A stage that was up to date costs nothing now (and says nothing about this machine)."""
        for s in self.stages:
            if s.name == name:
                s.measured = 0.0
                s.seconds = 0.0
        self.first_total = 0.0
        self.first_total = self.remaining()

    def finished(self, name: str, seconds: float) -> None:
        """Record a stage's measured time and rescale the same kind of stage still to come."""
        done = [s for s in self.stages if s.name == name]
        if not done:
            return
        stage = done[0]
        stage.measured = seconds
        measured = [s for s in self.stages if s.kind == stage.kind and s.measured is not None]
        predicted = sum(s.seconds for s in measured)
        if predicted > 0 and stage.kind in ("train", "eval"):
            self.scale[stage.kind] = sum(s.measured for s in measured) / predicted

    def epoch_measured(self, name: str, seconds: float, epochs: int) -> bool:
        """A training stage's first epoch took `seconds`: predict it (and the training stages to come) as
        `epochs` such epochs. True when this changed the estimate (only the first stage's first epoch does:
        later stages are rescaled by whole measured stages in `finished`)."""
        stage = next((s for s in self.stages if s.name == name), None)
        if stage is None or stage.kind != "train" or stage.seconds <= 0:
            return False
        if any(s.kind == "train" and s.measured is not None and s.measured > 0 for s in self.stages):
            return False
        self.scale["train"] = seconds * epochs / stage.seconds
        return True

    def to_dict(self) -> dict[str, Any]:
        return {
            "machine": asdict(self.speed),
            "first_estimate_seconds": self.first_total,
            "current_estimate_seconds": self.total(),
            "scale": dict(self.scale),
            "stages": [asdict(s) for s in self.stages],
            "assumptions": {
                "clean_share": CLEAN_SHARE,
                "robust_share": ROBUST_SHARE,
                "steps_to_fool": STEPS_TO_FOOL,
            },
        }


def train_seconds(cfg: Any, n_train: int, n_val: int, speed: MachineSpeed) -> float:
    """Predicted seconds of one training run (a fortify.training.TrainConfig)."""
    k = float(cfg.attack_steps)
    craft = {  # gradient evaluations per training image spent making its adversarial version
        "standard": 0.0,
        "noise": 0.0,
        "fast": 1.0,
        "pgd": k,
        "trades": k,
        "mart": k,
        "mixed": (1 + 2 * k) / 3,  # FGSM, PGD and the CW-loss PGD in rotation
    }.get(cfg.mode, k)
    # images trained on per image: clean + adversarial
    trained = 2.0 if cfg.mode == "mixed" else 1.5 if cfg.mode in ("trades", "mart") else 1.0
    per_epoch = n_train * (trained * speed.train_step + craft * speed.gradient)
    val = n_val * speed.forward
    if cfg.bn_recalibrate:  # fresh batch-norm statistics before each validation: a pass over the train split
        val += n_train * speed.forward
    if cfg.adversarial and cfg.robust_validation:
        val += _attacked(n_val, float(cfg.val_attack_steps)) * speed.gradient
    return cfg.epochs * (per_epoch + val)


def eval_passes(
    specs: list[AttackSpec],
    curve: list[tuple[AttackSpec, float]],
    n: int,
    sanity_factor: int,
    sanity_restarts: int,
    cumulative: bool = True,
    robust_share: float = ROBUST_SHARE,
    reattack: bool = False,
    joint_steps: int | None = None,
) -> dict[str, tuple[float, float]]:
    """(gradient evaluations, forward passes) expected per part of one evaluation: "attacks" (the headline
    ones), "curves", "sanity" (its extra runs): the parts results.json's "passes" counts; and "joint" (the
    joint attack on the patients, results.json's `patient.joint` counts) when `joint_steps` is set.

    A cumulative curve attacks at each eps only the previous eps's survivors: about `robust_share` of the
    images it attacked there. `reattack`: the attacks run in another precision than the scoring, so some
    images are attacked again (REATTACK_SHARE)."""
    from fortify.evaluation.attack_set import spec_at_eps

    r = robust_share

    parts = {"attacks": [0.0, 0.0], "curves": [0.0, 0.0], "sanity": [0.0, 0.0]}

    def add(part: str, g: float, f: float, share: float = 1.0) -> None:
        parts[part][0] += share * g
        parts[part][1] += share * f

    for spec in specs:
        g, f = attack_passes(spec, n, r)
        again = REATTACK_SHARE.get(spec.name, REATTACK_SHARE_OTHERS) if reattack else 0.0
        add("attacks", g, f, 1.0 + again)
    seen: dict[str, int] = {}  # nonzero points of each curve so far
    for template, eps in sorted(curve, key=lambda te: te[1]):
        if eps > 0:
            i = seen[str(template)] = seen.get(str(template), -1) + 1
            add("curves", *attack_passes(spec_at_eps(template, eps), n, r), r**i if cumulative else 1.0)
    pgd = next((s for s in specs if s.name == "pgd"), None)
    if pgd is not None:  # more steps and restarts (the large-eps run fools everything within a few steps)
        steps = float(pgd.params.get("steps", 10)) * sanity_factor * sanity_restarts
        add("sanity", _attacked(n, steps, r) + n * STEPS_TO_FOOL, 2 * n)
    if joint_steps:
        parts["joint"] = [0.0, 0.0]
        add("joint", *joint_passes(joint_steps, n, r), 1.0 + (REATTACK_SHARE_OTHERS if reattack else 0.0))
    return {k: (g, f) for k, (g, f) in parts.items()}


def eval_seconds(
    specs: list[AttackSpec],
    curve: list[tuple[AttackSpec, float]],
    n: int,
    sanity_factor: int,
    sanity_restarts: int,
    speed: MachineSpeed,
    cumulative: bool = True,
    robust_share: float = ROBUST_SHARE,
    joint_steps: int | None = None,
) -> float:
    """Predicted seconds of one evaluation: headline attacks, eps curves, sanity re-runs, the joint attack
    on the patients (`joint_steps`: its steps, None when off), scoring. `robust_share`: ROBUST_SHARE for
    a normally trained model, ADVERSARIAL_ROBUST_SHARE for a defended one."""
    reattack = speed.precision != "fp32"  # evaluation scores in fp32 by default
    parts = eval_passes(
        specs, curve, n, sanity_factor, sanity_restarts, cumulative, robust_share, reattack, joint_steps
    )
    return EVAL_OVERHEAD * sum(g * speed.gradient + f * speed.forward for g, f in parts.values())


def evaluate_estimate(
    model: torch.nn.Module, settings: Any, n_test: int, image_size: int, in_channels: int, runtime: Runtime
) -> float:
    """Predicted seconds of `fortify evaluate` (an EvalSettings over n_test images, before --limit): this
    machine measured on `model` itself, the model the evaluation attacks (a few seconds; its weights are
    not touched), then `eval_seconds`."""
    from fortify.evaluation import default_attack_specs
    from fortify.evaluation.patient_run import joint_steps

    s = settings
    specs = s.attacks or default_attack_specs(
        s.threat_model, s, image_size=image_size, in_channels=in_channels
    )
    speed = measure_machine(model, image_size, in_channels, runtime, eval_batch=s.batch_size, train=False)
    curve = [(t, float(e)) for t in s.curve_attacks for e in s.eps_curve]
    n = min(n_test, s.limit) if s.limit else n_test
    args = (s.sanity_steps_factor, s.sanity_restarts, speed, s.curve_cumulative)
    return eval_seconds(specs, curve, n, *args, joint_steps=joint_steps(s, specs))
