"""An attack's own success flags against the scorer's verdicts (attack_runs.settle): disagreements are
counted, re-attacked at the scoring precision when the attack ran in another one, and never flatter."""

from __future__ import annotations

import torch
from torch import nn

from fortify.attacks import parse_spec
from fortify.evaluation.attack_runs import AttackRunner, settle
from fortify.evaluation.batches import AttackRun, predict
from fortify.runtime import Runtime

FP32 = Runtime(torch.device("cpu"), "fp32", channels_last=False)
BF16 = Runtime(torch.device("cpu"), "bf16", channels_last=False)
SPEC = parse_spec("pgd:eps=0.25,steps=5")


class Linear2(nn.Module):
    """Class 0 when the mean pixel exceeds 0.5, else class 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1).mean(1) - 0.5
        return torch.stack([s, -s], dim=1) * 10


def _runner(model, x, y, attack_rt, batch_size):
    """An AttackRunner over (x, y) whose attacks run at `attack_rt` and are scored in fp32."""
    return AttackRunner(model, x, y, y.clone(), attack_rt, FP32, batch_size, lambda what: 0, None)


def _data(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.full((n, 1, 4, 4), 0.55)  # correctly classified as 0, within eps of the boundary
    return x, torch.zeros(n, dtype=torch.long)


def test_false_successes_are_counted_and_reattacked_at_the_scoring_precision() -> None:
    model = Linear2()
    x, y = _data()
    lying = torch.tensor([True, False, True, False, False, False, True, False])
    run = AttackRun(x.clone(), lying.clone())  # claims 3 successes on images it never changed
    x_adv, book = settle(SPEC, _runner(model, x, y, BF16, 4), run, seed=0)
    assert book == {"verdict_mismatches": 3, "reattacked_fp32": 3, "recovered_by_reattack": 3}
    pred, _ = predict(model, x_adv, FP32, 4)
    assert torch.equal(pred != y, lying)  # the re-attack really fooled exactly the flagged images
    assert torch.equal(x_adv[~lying], x[~lying])  # nothing else was touched


def test_same_precision_counts_without_reattacking() -> None:
    model = Linear2()
    x, y = _data()
    lying = torch.zeros(8, dtype=torch.bool)
    lying[0] = True
    x_adv, book = settle(SPEC, _runner(model, x, y, FP32, 8), AttackRun(x.clone(), lying), seed=0)
    assert book == {"verdict_mismatches": 1, "reattacked_fp32": 0, "recovered_by_reattack": 0}
    assert torch.equal(x_adv, x)  # the scorer's verdict (correct) stands: no flattering success


def test_missed_successes_are_counted_and_kept() -> None:
    model = Linear2()
    x, y = _data()
    fooling = x.clone()
    fooling[:2] = 0.3  # really misclassified, but the attack says it failed
    run = AttackRun(fooling, torch.zeros(8, dtype=torch.bool))
    x_adv, book = settle(SPEC, _runner(model, x, y, BF16, 8), run, seed=0)
    assert book["verdict_mismatches"] == 2 and book["recovered_by_reattack"] == 0
    pred, _ = predict(model, x_adv, FP32, 8)
    assert (pred[:2] != 0).all()  # the fp32 verdict (fooled) counts against the model


def test_count_passes_separates_gradient_evaluations_from_forward_passes() -> None:
    from fortify.attacks import pgd
    from fortify.evaluation.batches import count_passes

    model = Linear2()
    x, y = _data(6)
    with count_passes(model) as count:
        pgd(model, x, y, eps=0.01, steps=4)  # 4 steps: 4 gradient evaluations of 6 images each
        predict(model, x, FP32, 4)  # 6 images forward only
    assert count.gradient_evaluations == 24 and count.forward_passes == 6
    with count_passes(model) as after:
        pass
    model(x)  # outside the block: the hook is gone
    assert after.as_dict() == {"gradient_evaluations": 0, "forward_passes": 0}
