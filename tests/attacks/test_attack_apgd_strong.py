"""APGD (3-class-safe DLR) and the `strong` ensemble."""

from __future__ import annotations

import importlib

import pytest
import torch
from attack_helpers import accuracy, train_tiny

from fortify.attacks import apgd, pgd, strong
from fortify.attacks._common import dlr_loss, dlr_targeted_loss

apgd_module = importlib.import_module("fortify.attacks.apgd")  # the package attribute `apgd` is the function


def test_checkpoints_follow_the_paper():
    # Croce & Hein 2020: p = 0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99
    assert sorted(apgd_module._checkpoints(100)) == [22, 41, 57, 70, 80, 87, 93, 99]


def test_dlr_is_shift_and_scale_invariant():
    z = torch.randn(16, 3)
    y = torch.randint(0, 3, (16,))
    t = (y + 1) % 3
    assert torch.allclose(dlr_loss(z, y), dlr_loss(3 * z + 5, y), atol=1e-5)
    assert torch.allclose(dlr_targeted_loss(z, y, t), dlr_targeted_loss(3 * z + 5, y, t), atol=1e-5)


def test_targeted_dlr_has_a_gradient_where_the_naive_3_class_version_has_none():
    # y is the top class, t the bottom one: with D = z_pi1 - z_pi3 the loss is constantly -1.
    z0 = torch.tensor([[4.0, 1.5, -2.0]])
    y, t = torch.tensor([0]), torch.tensor([2])

    def naive(z):
        srt = z.sort(dim=1, descending=True).values
        return -(z[:, 0] - z[:, 2]) / (srt[:, 0] - srt[:, 2])

    z = z0.clone().requires_grad_(True)
    assert torch.autograd.grad(naive(z).sum(), z)[0].abs().max().item() < 1e-6
    # Normalized gradient ascent on the logits moves the target above the true class with our variant.
    z = z0.clone()
    for _ in range(200):
        z.requires_grad_(True)
        grad = torch.autograd.grad(dlr_targeted_loss(z, y, t).sum(), z)[0]
        assert grad.abs().max().item() > 1e-6
        z = (z + 0.1 * grad / grad.norm()).detach()
    assert z[0, 2] > z[0, 0]
    assert dlr_targeted_loss(z, y, t).item() > dlr_targeted_loss(z0, y, t).item()


def test_dlr_needs_three_classes(test_batch):
    model = train_tiny(num_classes=2)
    x, y = test_batch[0][:8], test_batch[1][:8] % 2
    with pytest.raises(ValueError):
        apgd(model, x, y, eps=8 / 255, loss="dlr", steps=3)
    # strong still works on 2 classes (it skips the DLR components)
    assert strong(model, x, y, eps=8 / 255, steps=3).shape == x.shape


def _mean_acc(model, attack, x, y, seeds=(0, 1, 2), **kw) -> float:
    accs = []
    for seed in seeds:
        x_adv = attack(model, x, y, generator=torch.Generator().manual_seed(seed), **kw)
        accs.append(accuracy(model, x_adv, y))
    return sum(accs) / len(accs)


@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_apgd_at_least_as_strong_as_pgd_at_equal_steps(loss, tiny_model, test_batch):
    """Same loss, same number of gradient steps, mean over 3 random starts: APGD's schedule wins.

    (Across losses it need not: on this model APGD-DLR alone ends ~1 pt above PGD-CE at 12/255,
    which is why `strong` runs both.)
    """
    x, y = test_batch
    eps = 12 / 255
    pgd_acc = _mean_acc(tiny_model, pgd, x, y, eps=eps, steps=10, loss=loss)
    apgd_acc = _mean_acc(tiny_model, apgd, x, y, eps=eps, steps=10, loss=loss)
    assert pgd_acc < accuracy(tiny_model, x, y)
    assert apgd_acc <= pgd_acc


def test_apgd_dlr_runs_on_three_classes_and_breaks_the_model(tiny_model, test_batch):
    x, y = test_batch
    x_adv = apgd(tiny_model, x, y, eps=12 / 255, steps=10, loss="dlr")
    assert accuracy(tiny_model, x_adv, y) < accuracy(tiny_model, x, y) - 0.3


def test_targeted_sweep_caps_targets_at_num_classes_minus_one(monkeypatch, tiny_model, test_batch):
    x, y = test_batch[0][:20], test_batch[1][:20]
    seen = []
    real_run = apgd_module._run

    def spy(model, xs, y_ref, target, **kw):
        seen.append(target.clone())
        assert (target != y_ref).all()
        return real_run(model, xs, y_ref, target, **kw)

    monkeypatch.setattr(apgd_module, "_run", spy)
    apgd(tiny_model, x, y, eps=0.0, steps=3, loss="dlr", n_target_classes=9)
    assert len(seen) == 2  # 3 classes: two wrong classes, not 9


def test_targeted_apgd_reaches_given_targets(tiny_model, test_batch):
    x, y = test_batch[0][:40], test_batch[1][:40]
    target = (y + 2) % 3
    for loss in ("ce", "dlr"):
        x_adv = apgd(tiny_model, x, target, eps=32 / 255, steps=20, loss=loss, targeted=True)
        with torch.no_grad():
            assert (tiny_model(x_adv).argmax(1) == target).float().mean().item() >= 0.9


def test_strong_no_weaker_than_its_first_component(tiny_model, test_batch):
    x, y = test_batch
    eps = 8 / 255
    first = apgd(tiny_model, x, y, eps=eps, steps=10, loss="ce", generator=torch.Generator().manual_seed(4))
    both = strong(tiny_model, x, y, eps=eps, steps=10, generator=torch.Generator().manual_seed(4))
    assert accuracy(tiny_model, both, y) <= accuracy(tiny_model, first, y)
    assert accuracy(tiny_model, both, y) < accuracy(tiny_model, x, y)
