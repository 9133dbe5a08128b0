"""Running a model and the attacks over a whole test set in batches.

Attacks are pure per-batch functions; batching, device placement, autocast, seeding and
progress bars are the evaluator's job (docs/ARCHITECTURE.md). Every batch result comes back to
the CPU in float32 so that metrics never depend on the device or on bf16 rounding of the stored
images.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from fortify.attacks import AttackSpec, cw_l2_detailed, run_attack_detailed, strong_detailed
from fortify.progress import Advance
from fortify.runtime import Runtime


@dataclass
class PassCount:
    """Images pushed through the model: with an input gradient (forward + backward) or forward only."""

    gradient_evaluations: int = 0
    forward_passes: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"gradient_evaluations": self.gradient_evaluations, "forward_passes": self.forward_passes}


@contextlib.contextmanager
def count_passes(model: torch.nn.Module) -> Iterator[PassCount]:
    """Count, per image, the model calls made inside the block (the cost of an attack, independent of
    the machine): a call whose input requires grad under grad mode is a gradient evaluation."""
    count = PassCount()

    def hook(_module: torch.nn.Module, args: tuple) -> None:
        x = args[0] if args else None
        if not isinstance(x, torch.Tensor):
            return
        if torch.is_grad_enabled() and x.requires_grad:
            count.gradient_evaluations += x.shape[0]
        else:
            count.forward_passes += x.shape[0]

    handle = model.register_forward_pre_hook(hook)
    try:
        yield count
    finally:
        handle.remove()


def _chunks(n: int, batch_size: int) -> list[slice]:
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


@torch.no_grad()
def predict(
    model: torch.nn.Module, x: torch.Tensor, runtime: Runtime, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted class and full softmax probabilities (float32, CPU) for every image."""
    was_training = model.training
    model.eval()
    preds, probs = [], []
    try:
        for sl in _chunks(len(x), batch_size):
            with runtime.autocast():
                logits = model(runtime.to_device(x[sl]))
            p = logits.float().softmax(dim=1).cpu()
            probs.append(p)
            preds.append(p.argmax(dim=1))
    finally:
        model.train(was_training)
    if not probs:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, 0)
    return torch.cat(preds), torch.cat(probs)


def attack_dataset(
    spec: AttackSpec,
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    runtime: Runtime,
    batch_size: int,
    advance: Advance | None = None,
) -> torch.Tensor:
    """x_adv for every image (float32, CPU), the attack run under `runtime.autocast()` per batch."""
    return attack_dataset_detailed(spec, model, x, y, runtime, batch_size, advance).x_adv


@dataclass
class AttackRun:
    """An attack over a dataset with the attack's own verdicts (float32 / bool, CPU)."""

    x_adv: torch.Tensor
    success: torch.Tensor  # judged by the attack on exactly x_adv, in the precision it ran in
    fooled_by: torch.Tensor | None = None  # `strong` only: index into `components`, -1 = not fooled
    components: tuple[str, ...] = ()


def attack_dataset_detailed(
    spec: AttackSpec,
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    runtime: Runtime,
    batch_size: int,
    advance: Advance | None = None,
) -> AttackRun:
    """Like `attack_dataset`, plus each sample's success flag as the attack judged it (and, for
    `strong`, which component fooled it), so the evaluator can compare it with its own verdict."""
    advs, flags, by = [], [], []
    components: tuple[str, ...] = ()
    for sl in _chunks(len(x), batch_size):
        xb, yb = runtime.to_device(x[sl]), y[sl].to(runtime.device)
        with runtime.autocast():
            if spec.name == "strong":
                r = strong_detailed(model, xb, yb, **spec.params)
                by.append(r.fooled_by.detach().cpu())
                components = tuple(r.component_names)
            else:
                r = run_attack_detailed(spec, model, xb, yb)
        advs.append(r.x_adv.detach().float().cpu().contiguous())
        flags.append(r.success.detach().bool().cpu())
        if advance:
            advance(sl.stop - sl.start)
    if not advs:
        return AttackRun(x.clone(), torch.zeros(0, dtype=torch.bool))
    return AttackRun(torch.cat(advs), torch.cat(flags), torch.cat(by) if by else None, components)


@dataclass
class CWRun:
    x_adv: torch.Tensor  # smallest-L2 successful example per image, or the input where CW failed
    success: torch.Tensor  # bool
    l2: torch.Tensor  # float64, inf where CW failed

    def within_budget(self, spec: AttackSpec, x: torch.Tensor) -> torch.Tensor:
        """The examples whose L2 is within the spec's max_l2 budget (every success when it has none);
        elsewhere the clean image: CW as fortify scores it (evaluation and detect alike)."""
        budget = spec.params.get("max_l2")
        ok = self.success & (self.l2 <= float(budget)) if budget is not None else self.success
        return torch.where(ok.view(-1, 1, 1, 1), self.x_adv, x)


def cw_kwargs(spec: AttackSpec) -> dict:
    """The spec's parameters minus the L2 budget: the evaluator runs CW unbounded and applies the
    budget itself, so the same run yields both the budgeted accuracy and the CW median L2."""
    accepted = inspect.signature(cw_l2_detailed).parameters
    return {k: v for k, v in spec.params.items() if k != "max_l2" and k in accepted}


def cw_dataset(
    spec: AttackSpec,
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    runtime: Runtime,
    batch_size: int,
    advance: Advance | None = None,
) -> CWRun:
    kwargs = cw_kwargs(spec)
    advs, successes, l2s = [], [], []
    for sl in _chunks(len(x), batch_size):
        xb, yb = runtime.to_device(x[sl]), y[sl].to(runtime.device)
        with runtime.autocast():
            result = cw_l2_detailed(model, xb, yb, **kwargs)
        advs.append(result.x_adv.detach().float().cpu().contiguous())
        successes.append(result.success.detach().bool().cpu())
        l2s.append(result.l2.detach().double().cpu())
        if advance:
            advance(sl.stop - sl.start)
    if not advs:
        return CWRun(x.clone(), torch.zeros(0, dtype=torch.bool), torch.zeros(0, dtype=torch.float64))
    return CWRun(torch.cat(advs), torch.cat(successes), torch.cat(l2s))


def sign_noise(x: torch.Tensor, eps: float, generator: torch.Generator) -> torch.Tensor:
    """Uniform random +-eps at every pixel (a corner of the L-inf ball), clipped to [0, 1]."""
    signs = torch.randint(0, 2, x.shape, generator=generator, dtype=torch.int8).to(x.dtype) * 2 - 1
    return (x + eps * signs).clamp(0.0, 1.0)
