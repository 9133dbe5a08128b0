"""Detect's attacks in work units (detect.work): the test split's FGSM, PGD and CW, and the adaptive attack.

Each unit draws its randomness from unit_seed(seed, "<what>", k) and keeps its cost beside its images (a
(1, 3) row: gradient evaluations, forward passes, seconds), so a reused unit still counts what it cost.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from fortify.attacks import AttackSpec
from fortify.detect.adaptive import adaptive_pgd
from fortify.detect.batches import Start, attack_images, chunks
from fortify.detect.detector import Detector
from fortify.detect.settings import DetectSettings
from fortify.detect.work import DetectWork
from fortify.evaluation.batches import PassCount, count_passes, cw_dataset
from fortify.evaluation.units import digest, unit_seed
from fortify.runtime import Runtime, seed_everything


def adaptive_images(
    detector: Detector,
    x: torch.Tensor,
    y: torch.Tensor,
    candidate: torch.Tensor,
    s: DetectSettings,
    runtime: Runtime,
    advance: Callable[[int], None],
    work: DetectWork,
) -> dict[str, torch.Tensor]:
    """The adaptive attack on the given (correctly classified) images, in work units, each with its own
    generator: {"x_adv", "success" (the attack's own flags), "cost" (per unit: gradient evaluations,
    forward passes, seconds)}."""

    def unit(k: int, sl: slice) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(unit_seed(s.seed, "adaptive", k))
        advs, flags = [], []
        t0 = time.perf_counter()
        with count_passes(detector.model) as count:
            for b in chunks(sl.stop - sl.start, s.batch_size):
                rows = slice(sl.start + b.start, sl.start + b.stop)
                with runtime.autocast():
                    r = adaptive_pgd(
                        detector,
                        runtime.to_device(x[rows]),
                        y[rows].to(runtime.device),
                        eps=s.eps,
                        steps=s.adaptive_steps,
                        lambdas=s.adaptive_lambdas,
                        kappa=s.adaptive_kappa,
                        alpha=s.adaptive_alpha,
                        candidates=[runtime.to_device(candidate[rows])],
                        generator=gen,
                    )
                advs.append(r.x_adv.float().cpu())
                flags.append(r.success.cpu())
                advance(rows.stop - rows.start)
        return {
            "x_adv": torch.cat(advs),
            "success": torch.cat(flags),
            "cost": cost_row(count, time.perf_counter() - t0),
        }

    specifics = {
        "attack": adaptive_text(s),
        "alpha": s.adaptive_alpha,
        "labels": digest(y),
        "candidates": digest(candidate),
        "detector": detector_digest(detector),
    }
    return work.images("adaptive", specifics, x, unit)


def cost_row(count: PassCount, seconds: float) -> torch.Tensor:
    """One unit's cost as a (1, 3) row (kept in its unit file, summed over units)."""
    return torch.tensor([[count.gradient_evaluations, count.forward_passes, seconds]], dtype=torch.float64)


def cost_of(rows: torch.Tensor | None) -> tuple[PassCount, float]:
    """The summed cost of the units: (passes, seconds)."""
    if rows is None or not len(rows):
        return PassCount(), 0.0
    total = rows.sum(dim=0)
    return PassCount(int(total[0]), int(total[1])), float(total[2])


def detector_digest(detector: Detector) -> str:
    """What the adaptive attack's outcome depends on in the fitted detector."""
    state = [t.detach().cpu() for t in detector.score.state_dict().values()]
    return digest([detector.threshold, detector.layers, detector.preprocess_eps, *state])


def adaptive_text(s: DetectSettings) -> str:
    return (
        f"adaptive-pgd:eps={s.eps:.6g},norm=linf,steps={s.adaptive_steps},lambdas="
        + "/".join(f"{v:g}" for v in s.adaptive_lambdas)
        + f",kappa={s.adaptive_kappa:g}"
    )


def test_attack_images(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    specs: dict[str, AttackSpec],
    s: DetectSettings,
    runtime: Runtime,
    start: Start,
    work: DetectWork,
) -> dict[str, torch.Tensor]:
    """FGSM, PGD and CW on the test images in work units: per attack key its images and "<key>.cost"
    (per unit: gradient evaluations, forward passes, seconds)."""
    bars = {key: start(f"test: {key}", len(x)) for key in specs}

    def unit(k: int, sl: slice) -> dict[str, torch.Tensor]:
        out = {}
        for key, spec in specs.items():
            t0 = time.perf_counter()
            with count_passes(model) as count:
                if key == "cw":  # run unbounded, kept within max_l2, as evaluation scores CW
                    run = cw_dataset(spec, model, x[sl], y[sl], runtime, s.batch_size, bars[key])
                    x_adv = run.within_budget(spec, x[sl])
                else:
                    seed_everything(unit_seed(s.seed, f"test {spec}", k))
                    x_adv = attack_images(spec, model, x[sl], y[sl], runtime, s.batch_size, bars[key])
            out[key], out[f"{key}.cost"] = x_adv, cost_row(count, time.perf_counter() - t0)
        return out

    specifics = {"attacks": [str(spec) for spec in specs.values()], "labels": digest(y)}
    return work.images("test", specifics, x, unit)
