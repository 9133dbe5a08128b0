"""Running one attack over the test set the way every number of an evaluation is made.

`AttackRunner` holds what each run needs (model, images, clean predictions, the attack and scoring
runtimes); `run_headline_attack` makes one entry of results.json's "attacks". A misclassified clean image
is never attacked (it counts as fooled, unperturbed), and every verdict is settled at the scoring
precision: where a bf16 attack and the fp32 scorer disagree, the image is attacked again at fp32.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from fortify.attacks import AttackSpec
from fortify.evaluation.attack_set import (
    is_cw,
    threat_model_dict,
)
from fortify.evaluation.batches import (
    AttackRun,
    attack_dataset_detailed,
    count_passes,
    cw_dataset,
    predict,
)
from fortify.evaluation.metrics import (
    classification_metrics,
    median,
    perturbation_norms,
    perturbation_stats,
    success_rate,
)
from fortify.runtime import Runtime, seed_everything


def accuracy(labels: torch.Tensor, preds: torch.Tensor) -> float:
    return float((preds == labels).double().mean()) if len(labels) else float("nan")


@dataclass
class AttackOutcome:
    """One headline attack over the test set: its results.json entry and what the later steps read."""

    entry: dict  # results["attacks"][key]
    pred: torch.Tensor  # the scorer's predictions on x_adv
    prob: torch.Tensor
    x_adv: torch.Tensor
    run: AttackRun | None  # kept when it records which component fooled each image (`strong`)


def run_headline_attack(ctx: AttackRunner, key: str, spec: AttackSpec, classes: list[str]) -> AttackOutcome:
    """Run one headline attack, settle its verdicts at the scoring precision and score it."""
    seed_everything(ctx.seed)
    advance = ctx.start(f"attack {key}", len(ctx.x) if is_cw(spec) else ctx.n_attacked())
    t0 = time.perf_counter()
    extra: dict = {}
    kept: AttackRun | None = None
    with count_passes(ctx.model) as count:  # every model call the attack makes, per image
        if is_cw(spec):
            x_adv, book, extra = _cw_attack(ctx, spec, advance)
        else:
            run = ctx.run(spec, advance)
            x_adv, book = settle(
                spec, ctx.model, ctx.x, ctx.y, run, ctx.runtime, ctx.score_rt, ctx.batch_size, ctx.seed
            )
            if run.fooled_by is not None:
                kept = run
    seconds = time.perf_counter() - t0
    pred, prob = predict(ctx.model, x_adv, ctx.score_rt, ctx.batch_size)
    fooled = (ctx.clean_pred == ctx.y) & (pred != ctx.y)
    l2, linf = perturbation_norms(ctx.x, x_adv)
    entry = {
        "spec": str(spec),
        "params": dict(spec.params),
        "threat_model": threat_model_dict(spec),
        **classification_metrics(ctx.y, pred, classes),
        "success_rate": success_rate(ctx.y, ctx.clean_pred, pred),
        "perturbation": perturbation_stats(l2, linf, fooled),
        **extra,
        **book,
        **count.as_dict(),
        "seconds": seconds,
    }
    return AttackOutcome(entry, pred, prob, x_adv, kept)


def _cw_attack(ctx: AttackRunner, spec: AttackSpec, advance: Callable) -> tuple[torch.Tensor, dict, dict]:
    """CW-L2 settled at the scoring precision: (x_adv within the L2 budget, bookkeeping, CW's own numbers)."""
    clean_correct = ctx.clean_pred == ctx.y
    run, book = settle_cw(
        spec, ctx.model, ctx.x, ctx.y, ctx.runtime, ctx.score_rt, ctx.batch_size, ctx.seed, advance
    )
    budget = spec.params.get("max_l2")
    within = run.success & (run.l2 <= float(budget)) if budget is not None else run.success
    x_adv = torch.where(within.view(-1, 1, 1, 1), run.x_adv, ctx.x)
    unbounded_ok = run.success & clean_correct
    extra = {
        "cw_median_l2": median(run.l2[unbounded_ok]),
        "cw_unbounded_success_rate": (
            float(unbounded_ok.sum()) / float(clean_correct.sum()) if clean_correct.any() else None
        ),
        "l2_budget": None if budget is None else float(budget),
    }
    return x_adv, book, extra


@dataclass
class AttackRunner:
    """What every attack run of an evaluation needs (headline attacks, curves, sanity checks)."""

    model: torch.nn.Module
    x: torch.Tensor
    y: torch.Tensor
    clean_pred: torch.Tensor
    runtime: Runtime  # attacks run here (autocast as configured)
    score_rt: Runtime  # predictions are scored here (fp32 by default)
    batch_size: int
    seed: int
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
        """(x_adv, scored predictions) of `run`, settled like the headline attacks."""
        run = self.run(spec, self.start(label, self.n_attacked(todo)), todo, start)
        x_adv, _ = settle(
            spec, self.model, self.x, self.y, run, self.runtime, self.score_rt, self.batch_size, self.seed
        )
        pred, _ = predict(self.model, x_adv, self.score_rt, self.batch_size)
        return x_adv, pred

    def accuracy(self, spec: AttackSpec, label: str, seed: int | None = None) -> tuple[float, float]:
        """(accuracy, seconds) of one attack over the whole set, settled like the headline attacks."""
        seed_everything(self.seed if seed is None else seed)
        t0 = time.perf_counter()
        _, pred = self.attack(spec, label)
        return accuracy(self.y, pred), time.perf_counter() - t0


def _disagreements(model, x_adv, y, success, attack_rt, score_rt, batch_size):
    """The scorer's predictions on x_adv, the bookkeeping of where they disagree with the attack's own
    success flags, and the indices to attack again (None when nothing disagrees or when the attack
    already ran at the scoring precision, where a rerun would repeat the same computation)."""
    pred, _ = predict(model, x_adv, score_rt, batch_size)
    mismatch = (pred != y) != success
    book = {"verdict_mismatches": int(mismatch.sum()), "reattacked_fp32": 0, "recovered_by_reattack": 0}
    if not mismatch.any() or attack_rt.precision == score_rt.precision:
        return pred, book, None
    return pred, book, mismatch.nonzero().squeeze(1)


def settle(spec, model, x, y, run: AttackRun, attack_rt, score_rt, batch_size, seed):
    """Compare the attack's own success flags with the scoring precision's verdicts.

    Returns (x_adv, bookkeeping). A sample whose verdicts differ (a bf16 "fooled" that fp32 calls
    correct, or the reverse) is counted; when the attack ran in another precision than the scoring, it
    is attacked again at the scoring precision and the new example is kept if it fools the scorer.
    """
    pred, book, idx = _disagreements(model, run.x_adv, y, run.success, attack_rt, score_rt, batch_size)
    if idx is None:
        return run.x_adv, book
    seed_everything(seed)
    again = attack_dataset_detailed(spec, model, x[idx], y[idx], score_rt, batch_size)
    pred2, _ = predict(model, again.x_adv, score_rt, batch_size)
    better = (pred2 != y[idx]) & (pred[idx] == y[idx])
    x_adv = run.x_adv.clone()
    x_adv[idx[better]] = again.x_adv[better]
    if run.fooled_by is not None and again.fooled_by is not None:
        run.fooled_by[idx[better]] = again.fooled_by[better]
    book.update(reattacked_fp32=len(idx), recovered_by_reattack=int(better.sum()))
    return x_adv, book


def settle_cw(spec, model, x, y, attack_rt, score_rt, batch_size, seed, advance):
    """CW over the set, its success flags checked (and re-attacked) at the scoring precision."""
    run = cw_dataset(spec, model, x, y, attack_rt, batch_size, advance)
    pred, book, idx = _disagreements(model, run.x_adv, y, run.success, attack_rt, score_rt, batch_size)
    if idx is None:
        return run, book
    seed_everything(seed)
    again = cw_dataset(spec, model, x[idx], y[idx], score_rt, batch_size)
    pred2, _ = predict(model, again.x_adv, score_rt, batch_size)
    ok = again.success & (pred2 != y[idx])
    run.x_adv[idx] = torch.where(ok.view(-1, 1, 1, 1), again.x_adv, x[idx])
    run.l2[idx] = torch.where(ok, again.l2, torch.full_like(again.l2, float("inf")))
    book.update(reattacked_fp32=len(idx), recovered_by_reattack=int((ok & (pred[idx] == y[idx])).sum()))
    run.success[idx] = ok
    return run, book
