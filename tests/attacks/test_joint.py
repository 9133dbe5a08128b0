"""The joint attack on a patient's decision (fortify.attacks.joint)."""

from __future__ import annotations

import pytest
import torch
from hand_models import BenignUpNormalDown
from torch import nn

from fortify.attacks import AttackSpec, joint_pgd, parse_spec, patient_decision, pgd, run_attack
from fortify.attacks.joint import joint_gradient

EPS = 0.05


class MeanIntensity(nn.Module):
    """Two classes decided by a slice's mean intensity: class 1 when it is above 0.5 (steep sigmoid)."""

    def __init__(self, k: float = 60.0) -> None:
        super().__init__()
        self.k = nn.Parameter(torch.tensor(k))
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        m = x.flatten(1).mean(1)
        return torch.stack([torch.zeros_like(m), self.k * (m - 0.5)], dim=1)


def _slices(*means: float) -> torch.Tensor:
    return torch.stack([torch.full((1, 4, 4), m) for m in means])


def _mean_prob_decision(model: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad():
        return patient_decision(model(x).softmax(1), "mean")


def test_joint_attack_flips_a_patient_the_per_slice_attacks_do_not():
    # Patient of class 0: slice A is already misclassified (mean 0.52), slice B cannot cross within eps
    # (0.42 + 0.05 < 0.5). Clean, the mean probability says 0. A per-slice attack (each slice for its own
    # label; a misclassified slice is not attacked, as evaluation does) pushes B to the edge of its ball
    # and leaves the patient at 0; the joint attack also pushes A further and the mean crosses.
    model = MeanIntensity()
    x, y = _slices(0.52, 0.42), torch.tensor([0, 0])
    assert _mean_prob_decision(model, x) == 0
    per_slice = x.clone()
    per_slice[1:] = pgd(model, x[1:], y[1:], eps=EPS, steps=20, random_start=False)
    assert _mean_prob_decision(model, per_slice) == 0
    for early_stop in (True, False):  # however far a per-slice attack goes, B alone cannot cross
        alone = pgd(model, x[1:], y[1:], eps=EPS, steps=20, early_stop=early_stop)
        assert model(alone).argmax(1).item() == 0
    x_adv = joint_pgd(model, x, 0, eps=EPS, steps=20, chunk=1, generator=torch.Generator().manual_seed(0))
    assert (x_adv - x).abs().max() <= EPS + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert _mean_prob_decision(model, x_adv) == 1


def test_chunked_gradient_is_the_exact_gradient_of_the_aggregated_loss():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3))
    x = torch.rand(7, 1, 6, 6)
    loss_all, probs_all, grad_all = joint_gradient(model, x, 2, chunk=7)
    x_ref = x.clone().requires_grad_(True)
    ref = -torch.log(model(x_ref).softmax(1).mean(0)[2])
    (grad_ref,) = torch.autograd.grad(ref, x_ref)
    assert loss_all == pytest.approx(float(ref.detach()), rel=1e-5)
    torch.testing.assert_close(grad_all, grad_ref, rtol=1e-4, atol=1e-7)
    for chunk in (1, 2, 3):
        loss, probs, grad = joint_gradient(model, x, 2, chunk=chunk)
        assert loss == pytest.approx(loss_all, rel=1e-6)
        torch.testing.assert_close(probs, probs_all)
        torch.testing.assert_close(grad, grad_all, rtol=1e-4, atol=1e-7)


def test_chunk_size_changes_neither_the_result_nor_the_memory_bound():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3))
    x = torch.rand(9, 1, 6, 6)
    y = int(model(x).softmax(1).mean(0).argmax())
    seen: list[int] = []
    hook = model.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[0]))
    runs = {}
    for chunk in (2, 9):
        seen.clear()
        runs[chunk] = joint_pgd(
            model, x, y, eps=8 / 255, steps=5, chunk=chunk, generator=torch.Generator().manual_seed(3)
        )
        # Memory: the model never sees more than `chunk` slices at once (with or without grad), so the
        # activations held are those of one chunk whatever the scan's length.
        assert max(seen) <= chunk
    hook.remove()
    torch.testing.assert_close(runs[2], runs[9], rtol=0, atol=1e-6)


def test_early_stop_and_rules():
    model = MeanIntensity()
    x = _slices(0.46, 0.46, 0.46)
    # Every slice can cross: the mean rule flips, and the attack stops at the first flipped iterate.
    model.batches.clear()
    x_adv = joint_pgd(model, x, 0, eps=EPS, steps=50, chunk=3, random_start=False)
    assert _mean_prob_decision(model, x_adv) == 1
    assert len(model.batches) < 2 * 50  # stopped early, not 50 steps of (no-grad + grad) passes
    # max:1 flips a patient labelled 1 only when no slice says 1; vote needs a majority.
    voted = joint_pgd(model, x, 0, eps=EPS, steps=20, rule="vote", random_start=False)
    with torch.no_grad():
        probs = model(voted).softmax(1)
    assert patient_decision(probs, "vote") == 1
    # eps 0 cannot move anything: the input comes back.
    torch.testing.assert_close(joint_pgd(model, x, 0, eps=0.0, steps=5), x)


def test_spec_registry_and_bad_input():
    spec = parse_spec("joint-pgd:eps=2/255,steps=20")
    assert spec == AttackSpec.build("joint-pgd", eps=2 / 255, steps=20)
    assert str(parse_spec(str(spec.replace(rule="max:1")))) == "joint-pgd:eps=2/255,steps=20,rule=max:1"
    assert AttackSpec.template("joint-pgd").at_eps(4 / 255).threat_model().eps == 4 / 255
    for bad in ("joint-pgd:eps=2/255,rule=median", "joint-pgd:eps=2/255,chunk=0"):
        with pytest.raises(Exception, match="rule|chunk"):
            parse_spec(bad)
    model = MeanIntensity()
    x = _slices(0.4, 0.4)
    with pytest.raises(ValueError, match="one label"):
        joint_pgd(model, x, torch.tensor([0, 1]), eps=EPS)
    out = run_attack("joint-pgd:eps=0.05,steps=3", model, x, torch.tensor([0, 0]))
    assert out.shape == x.shape and not out.requires_grad
    assert model.k.requires_grad  # parameters' requires_grad restored


def test_targeted_joint_attack_reaches_the_class_the_untargeted_one_passes_by():
    model, x = BenignUpNormalDown(), _slices(0.5, 0.5, 0.5)
    assert _mean_prob_decision(model, x) == 1
    kw = {"eps": 0.06, "steps": 40, "chunk": 2, "random_start": False}
    assert _mean_prob_decision(model, joint_pgd(model, x, 1, **kw)) == 0  # untargeted: benign
    x_adv = joint_pgd(model, x, 1, target=2, **kw)
    assert (x_adv - x).abs().max() <= 0.06 + 1e-6
    assert _mean_prob_decision(model, x_adv) == 2
    # out of reach: within 0.04 the mean cannot get below 0.45, and the attack does not pretend it did
    assert _mean_prob_decision(model, joint_pgd(model, x, 1, target=2, **{**kw, "eps": 0.04})) != 2
    with pytest.raises(ValueError, match="another class"):
        joint_pgd(model, x, 1, target=1, eps=0.06)
