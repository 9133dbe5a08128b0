"""Running the attacks of an evaluation on one unit of its test set, and scoring them.

`AttackRunner` holds what each run on a unit needs (model, the unit's images, clean predictions, the
attack and scoring runtimes, the unit's seeds); `unit_attack` runs one headline attack on it and keeps
per-image tensors; `attack_entry` turns those tensors, joined over every unit, into one entry of
results.json's "attacks". A misclassified clean image is never attacked (it counts as fooled,
unperturbed), and every verdict is settled at the scoring precision: where a bf16 attack and the fp32
scorer disagree, the image is attacked again at fp32.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from fortify.attacks import AttackSpec
from fortify.evaluation.attack_set import is_cw, threat_model_dict
from fortify.evaluation.batches import AttackRun, attack_dataset_detailed, count_passes, cw_dataset, predict
from fortify.evaluation.metrics import (
    classification_metrics,
    median,
    perturbation_norms,
    perturbation_stats,
    success_rate,
)
from fortify.runtime import Runtime, seed_everything

SeedFor = Callable[[str], int]  # what is computed ("attack pgd", ...) -> this unit's seed for it
BOOK_KEYS = ("verdict_mismatches", "reattacked_fp32", "recovered_by_reattack")
PASS_KEYS = ("gradient_evaluations", "forward_passes")


def accuracy(labels: torch.Tensor, preds: torch.Tensor) -> float:
    return float((preds == labels).double().mean()) if len(labels) else float("nan")


def summed(metas: list[dict], keys: tuple[str, ...]) -> dict[str, int]:
    """Counts over units: each unit's are whole-number counts over its own images."""
    return {k: sum(int(m[k]) for m in metas) for k in keys}


@dataclass
class AttackOutcome:
    """One headline attack over the whole test set: its results.json entry and what later steps read."""

    entry: dict  # results["attacks"][key]
    pred: torch.Tensor  # the scorer's predictions on x_adv
    prob: torch.Tensor
    fooled_by: torch.Tensor | None  # `strong`: the component that fooled each image (-1: none)
    components: list[str]


@dataclass
class AttackRunner:
    """What every attack run on one unit needs (headline attacks, curves, sanity runs)."""

    model: torch.nn.Module
    x: torch.Tensor
    y: torch.Tensor
    clean_pred: torch.Tensor
    runtime: Runtime  # attacks run here (autocast as configured)
    score_rt: Runtime  # predictions are scored here (fp32 by default)
    batch_size: int
    seed_for: SeedFor
    start: Callable

    def n_attacked(self, todo: torch.Tensor | None = None) -> int:
        return int((self.clean_pred == self.y).sum() if todo is None else todo.sum())

    def run(
        self,
        spec: AttackSpec,
        advance: Callable,
        todo: torch.Tensor | None = None,
        start: torch.Tensor | None = None,
    ) -> AttackRun:
        """`spec` over the images where `todo` is set, every other image left at `start` and counted as
        fooled. By default `todo` is the images the clean model gets right (a misclassified image needs
        no attack: it is "fooled" unperturbed) and `start` the clean images."""
        todo = (self.clean_pred == self.y) if todo is None else todo
        x_adv = (self.x if start is None else start).clone()
        success = torch.ones(len(self.x), dtype=torch.bool)
        idx = todo.nonzero().squeeze(1)
        sub = attack_dataset_detailed(
            spec, self.model, self.x[idx], self.y[idx], self.runtime, self.batch_size, advance
        )
        x_adv[idx], success[idx] = sub.x_adv, sub.success
        fooled_by = None
        if sub.fooled_by is not None:  # `strong`: an image it never saw was fooled by none of its parts
            fooled_by = torch.full((len(self.x),), -1, dtype=sub.fooled_by.dtype)
            fooled_by[idx] = sub.fooled_by
        return AttackRun(x_adv, success, fooled_by, sub.components)

    def attack(
        self,
        spec: AttackSpec,
        label: str,
        todo: torch.Tensor | None = None,
        start: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_adv, scored predictions) of `run`, settled like the headline attacks; seeded by `label`."""
        seed_everything(self.seed_for(label))
        run = self.run(spec, self.start(label, self.n_attacked(todo)), todo, start)
        x_adv, _ = settle(spec, self, run, self.seed_for(f"settle {label}"))
        pred, _ = predict(self.model, x_adv, self.score_rt, self.batch_size)
        return x_adv, pred

    def correct(self, spec: AttackSpec, label: str) -> tuple[torch.Tensor, float]:
        """(per-image correct flags, seconds) of one attack over the unit, settled like the headline ones."""
        t0 = time.perf_counter()
        _, pred = self.attack(spec, label)
        return pred == self.y, time.perf_counter() - t0


def unit_attack(
    runner: AttackRunner, key: str, spec: AttackSpec, example_rows: torch.Tensor
) -> tuple[dict[str, torch.Tensor], dict]:
    """One headline attack on the unit: per-image tensors (scored predictions and probabilities,
    perturbation norms, `strong`'s fooling component, CW's minimal L2; x_adv of the example images) and
    the unit's counts (verdict bookkeeping, model passes, seconds)."""
    label = f"attack {key}"
    seed_everything(runner.seed_for(label))
    advance = runner.start(label, len(runner.x) if is_cw(spec) else runner.n_attacked())
    t0 = time.perf_counter()
    tensors: dict[str, torch.Tensor] = {}
    components: list[str] = []
    with count_passes(runner.model) as count:  # every model call the attack makes, per image
        if is_cw(spec):
            run, book = settle_cw(spec, runner, advance, runner.seed_for(f"settle {label}"))
            x_adv = run.within_budget(spec, runner.x)
            tensors.update(cw_l2=run.l2, cw_success=run.success)
        else:
            run = runner.run(spec, advance)
            x_adv, book = settle(spec, runner, run, runner.seed_for(f"settle {label}"))
            if run.fooled_by is not None:
                tensors["fooled_by"], components = run.fooled_by, list(run.components)
    seconds = time.perf_counter() - t0
    pred, prob = predict(runner.model, x_adv, runner.score_rt, runner.batch_size)
    l2, linf = perturbation_norms(runner.x, x_adv)
    tensors.update(pred=pred, prob=prob, l2=l2, linf=linf, examples=x_adv[example_rows])
    meta = {**book, **count.as_dict(), "seconds": seconds, "components": components}
    return tensors, meta


def attack_entry(
    spec: AttackSpec,
    y: torch.Tensor,
    clean_pred: torch.Tensor,
    t: dict[str, torch.Tensor],
    metas: list[dict],
    classes: list[str],
) -> dict:
    """results.json's entry for one headline attack, from its per-image tensors over the whole test set."""
    pred = t["pred"]
    fooled = (clean_pred == y) & (pred != y)
    extra: dict = {}
    if is_cw(spec):
        clean_correct = clean_pred == y
        unbounded_ok = t["cw_success"] & clean_correct
        budget = spec.params.get("max_l2")
        extra = {
            "cw_median_l2": median(t["cw_l2"][unbounded_ok]),
            "cw_unbounded_success_rate": (
                float(unbounded_ok.sum()) / float(clean_correct.sum()) if clean_correct.any() else None
            ),
            "l2_budget": None if budget is None else float(budget),
        }
    return {
        "spec": str(spec),
        "params": dict(spec.params),
        "threat_model": threat_model_dict(spec),
        **classification_metrics(y, pred, classes),
        "success_rate": success_rate(y, clean_pred, pred),
        "perturbation": perturbation_stats(t["l2"], t["linf"], fooled),
        **extra,
        **summed(metas, BOOK_KEYS),
        **summed(metas, PASS_KEYS),
        "seconds": sum(float(m["seconds"]) for m in metas),
    }


def _disagreements(runner: AttackRunner, x_adv, y, success):
    """The scorer's predictions on x_adv, the bookkeeping of where they disagree with the attack's own
    success flags, and the indices to attack again (None when nothing disagrees or when the attack
    already ran at the scoring precision, where a rerun would repeat the same computation)."""
    pred, _ = predict(runner.model, x_adv, runner.score_rt, runner.batch_size)
    mismatch = (pred != y) != success
    book = {"verdict_mismatches": int(mismatch.sum()), "reattacked_fp32": 0, "recovered_by_reattack": 0}
    if not mismatch.any() or runner.runtime.precision == runner.score_rt.precision:
        return pred, book, None
    return pred, book, mismatch.nonzero().squeeze(1)


def settle(spec: AttackSpec, runner: AttackRunner, run: AttackRun, seed: int):
    """Compare the attack's own success flags with the scoring precision's verdicts.

    Returns (x_adv, bookkeeping). A sample whose verdicts differ (a bf16 "fooled" that fp32 calls
    correct, or the reverse) is counted; when the attack ran in another precision than the scoring, it
    is attacked again at the scoring precision and the new example is kept if it fools the scorer.
    """
    x, y = runner.x, runner.y
    pred, book, idx = _disagreements(runner, run.x_adv, y, run.success)
    if idx is None:
        return run.x_adv, book
    seed_everything(seed)
    again = attack_dataset_detailed(spec, runner.model, x[idx], y[idx], runner.score_rt, runner.batch_size)
    pred2, _ = predict(runner.model, again.x_adv, runner.score_rt, runner.batch_size)
    better = (pred2 != y[idx]) & (pred[idx] == y[idx])
    x_adv = run.x_adv.clone()
    x_adv[idx[better]] = again.x_adv[better]
    if run.fooled_by is not None and again.fooled_by is not None:
        run.fooled_by[idx[better]] = again.fooled_by[better]
    book.update(reattacked_fp32=len(idx), recovered_by_reattack=int(better.sum()))
    return x_adv, book


def settle_cw(spec: AttackSpec, runner: AttackRunner, advance: Callable, seed: int):
    """CW over the unit, its success flags checked (and re-attacked) at the scoring precision."""
    x, y, bs = runner.x, runner.y, runner.batch_size
    run = cw_dataset(spec, runner.model, x, y, runner.runtime, bs, advance)
    pred, book, idx = _disagreements(runner, run.x_adv, y, run.success)
    if idx is None:
        return run, book
    seed_everything(seed)
    again = cw_dataset(spec, runner.model, x[idx], y[idx], runner.score_rt, bs)
    pred2, _ = predict(runner.model, again.x_adv, runner.score_rt, bs)
    ok = again.success & (pred2 != y[idx])
    run.x_adv[idx] = torch.where(ok.view(-1, 1, 1, 1), again.x_adv, x[idx])
    run.l2[idx] = torch.where(ok, again.l2, torch.full_like(again.l2, float("inf")))
    book.update(reattacked_fp32=len(idx), recovered_by_reattack=int((ok & (pred[idx] == y[idx])).sum()))
    run.success[idx] = ok
    return run, book
