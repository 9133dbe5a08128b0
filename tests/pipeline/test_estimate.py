"""The time budget: what it predicts moves the right way, corrects itself, and is written beside the run."""

from __future__ import annotations

import pytest

from fortify.attacks import parse_spec
from fortify.models import build_model
from fortify.pipeline.estimate import (
    Budget,
    MachineSpeed,
    StageEstimate,
    attack_passes,
    eval_seconds,
    measure_machine,
    train_seconds,
)
from fortify.runtime import Runtime
from fortify.training import TrainConfig

SPEED = MachineSpeed(
    train_step=0.01, gradient=0.004, forward=0.001, precision="fp32", device="cpu", seconds=0
)


def test_attack_cost_grows_with_budget_and_counts_square_as_forward_passes():
    g10, _ = attack_passes(parse_spec("pgd:eps=2/255,steps=10"), 100)
    g20, _ = attack_passes(parse_spec("pgd:eps=2/255,steps=20"), 100)
    assert g20 > g10 > 0
    g_sq, f_sq = attack_passes(parse_spec("square:eps=2/255,queries=1000"), 100)
    assert g_sq == 0 and f_sq > 1000
    g_few, f_few = attack_passes(parse_spec("strong:eps=2/255,steps=10,square_queries=100"), 100)
    g_many, f_many = attack_passes(parse_spec("strong:eps=2/255,steps=100,square_queries=5000"), 100)
    assert g_many > 5 * g_few and f_many > 10 * f_few
    g_std, _ = attack_passes(
        parse_spec("strong:eps=2/255,steps=100,square_queries=5000,version=standard"), 100
    )
    assert g_std < g_many
    assert (
        attack_passes(parse_spec("cw:steps=20,binary_steps=3"), 100)[0]
        > attack_passes(parse_spec("cw:steps=20,binary_steps=1"), 100)[0]
    )


def test_training_estimate_ranks_modes_by_cost():
    def cfg(mode: str, **kw) -> TrainConfig:
        return TrainConfig.from_dict({"data": "phantom", "mode": mode, "epochs": 2, "attack_steps": 5, **kw})

    std = train_seconds(cfg("standard"), 100, 20, SPEED)
    pgd = train_seconds(cfg("pgd"), 100, 20, SPEED)
    assert pgd > std > 0
    assert train_seconds(cfg("standard", epochs=4), 100, 20, SPEED) == pytest.approx(2 * std)
    # re-estimating batch-norm statistics each epoch is one forward pass over the 100 training images
    fixed_bn = train_seconds(cfg("standard", bn_recalibrate=False), 100, 20, SPEED)
    assert std - fixed_bn == pytest.approx(2 * 100 * SPEED.forward)


def test_eval_estimate_counts_curves_and_sanity():
    specs = [parse_spec("fgsm:eps=2/255"), parse_spec("pgd:eps=2/255,steps=20")]
    pgd5 = parse_spec("pgd:steps=5", template=True)
    bare = eval_seconds(specs, [], 100, 2, 2, SPEED)
    with_curve = eval_seconds(specs, [(pgd5, 0.0), (pgd5, 4 / 255)], 100, 2, 2, SPEED)
    assert with_curve > bare > 0
    # a cumulative curve attacks only the previous eps's survivors: its later points cost less
    three = [(pgd5, e) for e in (1 / 255, 2 / 255, 4 / 255)]
    cumulative = eval_seconds(specs, three, 100, 2, 2, SPEED) - bare
    independent = eval_seconds(specs, three, 100, 2, 2, SPEED, cumulative=False) - bare
    first = eval_seconds(specs, three[:1], 100, 2, 2, SPEED) - bare
    assert first < cumulative < independent == pytest.approx(3 * first)


def test_budget_rescales_the_stages_of_the_same_kind_still_to_come():
    stages = [
        StageEstimate("a", "train", 10),
        StageEstimate("a/eval", "eval", 20),
        StageEstimate("b", "train", 30),
        StageEstimate("b/eval", "eval", 40),
    ]
    budget = Budget(SPEED, stages)
    assert budget.first_total == pytest.approx(100)
    budget.finished("a", 20.0)  # training took twice the prediction
    assert budget.remaining() == pytest.approx(20 + 60 + 40)
    budget.finished("a/eval", 10.0)  # evaluation half
    assert budget.remaining() == pytest.approx(60 + 20)
    assert budget.total() == pytest.approx(20 + 10 + 60 + 20)
    assert budget.first_total == pytest.approx(100)  # the first estimate is kept for judging it


def test_skipped_stages_cost_nothing():
    budget = Budget(SPEED, [StageEstimate("a", "train", 10), StageEstimate("b", "eval", 5)])
    budget.skipped("a")
    assert budget.total() == pytest.approx(5) and budget.first_total == pytest.approx(5)


def test_measure_machine_times_a_small_model_and_leaves_the_original_alone():
    model = build_model("smallcnn", 3, in_channels=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    speed = measure_machine(build_model("smallcnn", 3, in_channels=1), 16, 1, Runtime.resolve("cpu", "fp32"))
    assert speed.train_step > 0 and speed.gradient > 0 and speed.forward > 0
    assert speed.forward < speed.train_step  # a forward pass is cheaper than a training step
    assert all((model.state_dict()[k] == v).all() for k, v in before.items())


def test_first_epoch_rescales_training_until_a_training_stage_is_measured():
    stages = [
        StageEstimate("a", "train", 100),
        StageEstimate("a/eval", "eval", 50),
        StageEstimate("b", "train", 40),
    ]
    budget = Budget(SPEED, stages)
    assert budget.epoch_measured("a", 20.0, 10)  # 10 epochs of 20 s: twice the prediction
    assert budget.remaining() == pytest.approx(200 + 50 + 80)
    assert not budget.epoch_measured("a/eval", 1.0, 1)  # only training stages have epochs
    budget.finished("a", 150.0)
    assert not budget.epoch_measured("b", 1.0, 1)  # a whole measured stage beats one epoch
    assert budget.remaining() == pytest.approx(50 + 40 * 1.5)


def test_eval_estimate_knows_the_defended_model_and_the_fp32_reattacks():
    from dataclasses import replace

    from fortify.pipeline.estimate import ADVERSARIAL_ROBUST_SHARE, ROBUST_SHARE, eval_passes

    specs = [parse_spec(t) for t in ("pgd:eps=2/255,steps=20", "cw:steps=20,binary_steps=3")]
    normal = eval_seconds(specs, [], 50, 2, 2, SPEED, robust_share=ROBUST_SHARE)
    defended = eval_seconds(specs, [], 50, 2, 2, SPEED, robust_share=ADVERSARIAL_ROBUST_SHARE)
    assert defended > normal
    bf16 = eval_seconds(specs, [], 50, 2, 2, replace(SPEED, precision="bf16"))
    assert bf16 > normal  # bf16 attacks, fp32 verdicts: the disagreeing images are attacked again
    # CW is unbounded: every image (not only the correct ones) takes every step of every round
    assert eval_passes(specs[1:], [], 50, 2, 2)["attacks"][0] == 50 * 20 * 3


def test_evaluate_estimate_measures_and_predicts():
    from fortify.evaluation import EvalSettings
    from fortify.pipeline.estimate import evaluate_estimate

    model = build_model("smallcnn", 3).eval()
    before = [p.clone() for p in model.parameters()]
    settings = EvalSettings.preset("smoke")
    seconds = evaluate_estimate(model, settings, 200, 16, 1, Runtime.resolve("cpu", "fp32"))
    assert 0 < seconds < 600
    assert all((a == b).all() for a, b in zip(before, model.parameters(), strict=True))


def test_evaluate_estimate_counts_the_joint_attack(monkeypatch):
    """The joint attack on the patients (evaluation/patient_run.py) is in the printed estimate: like PGD's,
    steps x the slices of clean-correct patients, at the headline PGD's steps unless it names its own,
    plus its targeted run at normal on the malignant patients (the whole budget)."""
    from dataclasses import replace

    from fortify.evaluation import EvalSettings
    from fortify.pipeline import estimate
    from fortify.pipeline.estimate import (
        CLEAN_SHARE,
        EVAL_OVERHEAD,
        MALIGNANT_SHARE,
        ROBUST_SHARE,
        STEPS_TO_FOOL,
    )

    monkeypatch.setattr(estimate, "measure_machine", lambda *a, **k: SPEED)  # the same machine each call
    model, rt = build_model("smallcnn", 3).eval(), Runtime.resolve("cpu", "fp32")
    settings = EvalSettings.preset("smoke")
    with_joint = estimate.evaluate_estimate(model, settings, 200, 16, 1, rt)
    without = estimate.evaluate_estimate(model, replace(settings, joint_attack=None), 200, 16, 1, rt)
    pgd = next(s for s in settings.attacks or estimate_specs(settings) if s.name == "pgd")
    steps = int(pgd.params["steps"])
    n = min(200, settings.limit or 200)  # the smoke preset's --limit
    grads = n * CLEAN_SHARE * (ROBUST_SHARE * steps + (1 - ROBUST_SHARE) * min(steps, STEPS_TO_FOOL))
    grads += round(n * MALIGNANT_SHARE) * CLEAN_SHARE * steps
    joint = EVAL_OVERHEAD * (grads * SPEED.gradient + (grads + 2 * n) * SPEED.forward)
    assert with_joint - without == pytest.approx(joint)
    own = replace(settings, joint_attack=parse_spec("joint-pgd:steps=40", template=True))
    assert estimate.evaluate_estimate(model, own, 200, 16, 1, rt) > with_joint  # its own steps count


def estimate_specs(settings):
    from fortify.evaluation import default_attack_specs

    return default_attack_specs(settings.threat_model, settings, image_size=16, in_channels=1)
