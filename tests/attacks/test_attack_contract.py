"""Contract rules every attack must keep (docs/ARCHITECTURE.md, fortify.attacks)."""

from __future__ import annotations

import pytest
import torch
from attack_helpers import accuracy

from fortify.attacks import (
    ATTACKS,
    PATIENT_ATTACKS,
    AttackResult,
    AttackSpec,
    apgd,
    cw_l2,
    fgsm,
    parse_spec,
    pgd,
    run_attack,
    run_attack_detailed,
    square,
    strong,
)

TOL = 1e-6

# Large-ish budgets so each attack provably does something on the tiny model.
SPECS = [
    "fgsm:eps=16/255",
    "fgsm:eps=16/255,random_start=true",
    "fgsm:eps=1.0,norm=l2",
    "pgd:eps=16/255,steps=5",
    "pgd:eps=16/255,steps=5,restarts=2,early_stop=true",
    "pgd:eps=16/255,steps=5,loss=cw",
    "pgd:eps=16/255,steps=5,loss=dlr,early_stop=true",
    "pgd:norm=l2,eps=1.0,steps=5",
    "cw:steps=20,binary_steps=2,c=1",
    "cw:steps=20,binary_steps=2,c=1,max_l2=0.5",
    "apgd:eps=16/255,steps=8",
    "apgd:eps=16/255,steps=8,loss=dlr",
    "apgd:eps=16/255,steps=8,loss=dlr,n_target_classes=2",
    "apgd:norm=l2,eps=1.0,steps=8",
    "square:eps=16/255,queries=200",
    "square:norm=l2,eps=1.0,queries=200",
    "square:eps=16/255,queries=50,restarts=2,early_stop=false",
    "strong:eps=16/255,steps=5,square_queries=50",
    "strong:norm=l2,eps=1.0,steps=5,square_queries=50",
]


def test_every_registered_attack_is_covered():
    # patient attacks (one scan, one label) have their own contract: tests/attacks/test_joint.py
    assert {parse_spec(text).name for text in SPECS} == set(ATTACKS) - PATIENT_ATTACKS


def _within_threat(spec: AttackSpec, x: torch.Tensor, x_adv: torch.Tensor) -> None:
    threat = spec.threat_model()
    delta = (x_adv - x).flatten(1)
    if threat is None:
        return
    if threat.norm == "linf":
        assert delta.abs().max().item() <= threat.eps + TOL
    else:
        assert delta.norm(dim=1).max().item() <= threat.eps + TOL


@pytest.mark.parametrize("text", SPECS)
def test_output_contract(text, tiny_model, test_batch):
    spec = parse_spec(text)
    x, y = test_batch[0][:24], test_batch[1][:24]
    x_adv = run_attack(spec, tiny_model, x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device
    assert not x_adv.requires_grad
    assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0
    _within_threat(spec, x, x_adv)
    # No attack may silently return its input: at these budgets each one fools some samples.
    assert accuracy(tiny_model, x_adv, y) < accuracy(tiny_model, x, y)


@pytest.mark.parametrize("text", SPECS)
@pytest.mark.parametrize("start_training", [True, False])
def test_model_state_restored(text, start_training, tiny_model, test_batch):
    x, y = test_batch[0][:8], test_batch[1][:8]
    model = tiny_model
    params = list(model.parameters())
    # A mix: some frozen, some trainable; one with a pending gradient a training loop accumulated.
    flags_before = [i % 3 != 0 for i in range(len(params))]
    for p, flag in zip(params, flags_before, strict=True):
        p.requires_grad_(flag)
        p.grad = None
    params[1].grad = torch.full_like(params[1], 0.25)
    saved_grad = params[1].grad.clone()
    weights_before = [p.detach().clone() for p in params]
    model.train(start_training)
    model.modes_seen.clear()
    try:
        run_attack(text, model, x, y)
        assert model.training == start_training
        assert model.modes_seen and not any(model.modes_seen), "attack ran the model in train mode"
        assert [p.requires_grad for p in params] == flags_before
        assert all(p.grad is None for i, p in enumerate(params) if i != 1)
        assert torch.equal(params[1].grad, saved_grad)
        assert all(torch.equal(p, w) for p, w in zip(params, weights_before, strict=True))
    finally:
        model.eval()
        for p in params:
            p.requires_grad_(True)
            p.grad = None


@pytest.mark.parametrize(
    "text",
    [
        "fgsm:eps=8/255",
        "pgd:eps=8/255,steps=3",
        "apgd:eps=8/255,steps=4",
        "square:eps=8/255,queries=20",
        "square:norm=l2,eps=0.5,queries=20",
        "strong:eps=8/255,steps=3,square_queries=20",
        "cw:steps=5,binary_steps=1",
    ],
)
def test_channels_last_in_channels_last_out(text, tiny_model, test_batch):
    # Two input channels, so channels_last is a genuinely different layout from contiguous.
    x = test_batch[0][:6].repeat(1, 2, 1, 1).contiguous(memory_format=torch.channels_last)
    y = test_batch[1][:6]
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 1, 1), tiny_model).eval()
    x_adv = run_attack(text, model, x, y)
    assert x_adv.shape == x.shape
    assert x_adv.is_contiguous(memory_format=torch.channels_last) and not x_adv.is_contiguous()


def test_float64_input_keeps_dtype(tiny_model, test_batch):
    model = tiny_model.double()
    try:
        x, y = test_batch[0][:6].double(), test_batch[1][:6]
        for attack in (fgsm, pgd, apgd):
            assert attack(model, x, y, eps=8 / 255).dtype == torch.float64
        for norm in ("linf", "l2"):
            assert square(model, x, y, eps=8 / 255, norm=norm, queries=20).dtype == torch.float64
        assert strong(model, x, y, eps=8 / 255, steps=3, square_queries=20).dtype == torch.float64
        assert cw_l2(model, x, y, steps=5, binary_steps=1).dtype == torch.float64
    finally:
        tiny_model.float()


def test_bad_arguments_raise(tiny_model, test_batch):
    x, y = test_batch[0][:4], test_batch[1][:4]
    with pytest.raises(ValueError):
        pgd(tiny_model, x, y, eps=-0.1)
    with pytest.raises(ValueError):
        pgd(tiny_model, x, y, eps=0.1, norm="l1")
    with pytest.raises(ValueError):
        pgd(tiny_model, x, y, eps=0.1, steps=0)
    with pytest.raises(TypeError):
        fgsm(tiny_model, (x * 255).to(torch.uint8), y, eps=0.1)


def _rescore(model, x_adv, y, targeted: bool) -> torch.Tensor:
    with torch.no_grad():
        pred = model(x_adv).argmax(1)
    return pred == y if targeted else pred != y


@pytest.mark.parametrize("text", SPECS)
def test_detailed_success_equals_a_rescore_of_the_returned_tensor(text, tiny_model, test_batch):
    x, y = test_batch[0][:24], test_batch[1][:24]
    res = run_attack_detailed(text, tiny_model, x, y)
    assert isinstance(res, AttackResult) and res.success.dtype == torch.bool and res.success.shape == y.shape
    assert torch.equal(res.success, _rescore(tiny_model, res.x_adv, y, False))
    assert res.success.any()


# bf16 makes near-ties common, so a success judged in a different batch or precision would show.
BF16_SPECS = [
    "fgsm:eps=8/255",
    "pgd:eps=8/255,steps=5,early_stop=true",
    "apgd:eps=8/255,steps=5",
    "square:eps=8/255,queries=50",
    "cw:steps=20,binary_steps=2,c=1",
    "strong:eps=8/255,steps=3,square_queries=20",
]


@pytest.mark.parametrize("text", BF16_SPECS)
def test_detailed_success_in_the_callers_bf16_autocast(text, tiny_model, test_batch):
    x, y = test_batch[0][:24], test_batch[1][:24]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        res = run_attack_detailed(text, tiny_model, x, y)
        assert torch.is_autocast_enabled("cpu")  # the caller's context is left as it was
        rescored = _rescore(tiny_model, res.x_adv, y, False)
    assert torch.equal(res.success, rescored)


def test_detailed_success_for_targeted_specs(tiny_model, test_batch):
    x, y = test_batch[0][:24], test_batch[1][:24]
    target = (y + 1) % 3
    for text in (
        "pgd:eps=16/255,steps=5,targeted=true",
        "apgd:eps=16/255,steps=5,targeted=true",
        "cw:steps=20,binary_steps=2,c=1,targeted=true",
    ):
        res = run_attack_detailed(text, tiny_model, x, target)
        assert torch.equal(res.success, _rescore(tiny_model, res.x_adv, target, True)), text
        assert res.success.any(), text
