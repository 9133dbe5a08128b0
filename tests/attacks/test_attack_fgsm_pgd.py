"""FGSM and PGD against torchattacks, and sanity properties of PGD."""

from __future__ import annotations

import pytest
import torch
import torchattacks
from attack_helpers import accuracy

from fortify.attacks import fgsm, pgd
from fortify.attacks._common import attack_loss, other_max


@pytest.mark.parametrize("eps", [2 / 255, 8 / 255])
def test_fgsm_matches_torchattacks(eps, tiny_model, test_batch):
    x, y = test_batch[0][:64], test_batch[1][:64]
    ours = fgsm(tiny_model, x, y, eps=eps)
    theirs = torchattacks.FGSM(tiny_model, eps=eps)(x, y)
    assert (ours - theirs).abs().max().item() <= 1e-6
    assert (ours - x).abs().max().item() > eps / 2  # it moved


def test_fgsm_targeted_matches_torchattacks(tiny_model, test_batch):
    x, y = test_batch[0][:32], test_batch[1][:32]
    target = (y + 1) % 3
    ours = fgsm(tiny_model, x, target, eps=8 / 255, targeted=True)
    ta = torchattacks.FGSM(tiny_model, eps=8 / 255)
    ta.set_mode_targeted_by_function(lambda images, labels: (labels + 1) % 3)
    assert (ours - ta(x, y)).abs().max().item() <= 1e-6


def test_pgd_without_random_start_at_least_as_strong_as_torchattacks(tiny_model, test_batch):
    """Same deterministic iterates; early stopping only retires already-fooled samples."""
    x, y = test_batch
    eps = 8 / 255
    theirs = torchattacks.PGD(tiny_model, eps=eps, alpha=eps / 4, steps=10, random_start=False)(x, y)
    for early_stop in (False, True):
        ours = pgd(
            tiny_model, x, y, eps=eps, alpha=eps / 4, steps=10, random_start=False, early_stop=early_stop
        )
        assert accuracy(tiny_model, ours, y) <= accuracy(tiny_model, theirs, y) + 1e-9


@pytest.mark.parametrize("eps", [8 / 255, 12 / 255])
def test_pgd_robust_accuracy_within_one_point_of_torchattacks(eps, tiny_model, test_batch):
    x, y = test_batch
    torch.manual_seed(0)
    ta = torchattacks.PGD(tiny_model, eps=eps, alpha=2.5 * eps / 10, steps=10)
    theirs = accuracy(tiny_model, ta(x, y), y)
    g = torch.Generator().manual_seed(0)
    ours = accuracy(tiny_model, pgd(tiny_model, x, y, eps=eps, steps=10, early_stop=True, generator=g), y)
    assert theirs < accuracy(tiny_model, x, y)  # the budget is one where the attack matters
    assert ours <= theirs + 0.01


def test_pgd_l2_robust_accuracy_within_one_point_of_torchattacks(tiny_model, test_batch):
    x, y = test_batch
    eps = 0.5
    torch.manual_seed(0)
    ta = torchattacks.PGDL2(tiny_model, eps=eps, alpha=2.5 * eps / 10, steps=10)
    theirs = accuracy(tiny_model, ta(x, y), y)
    ours = accuracy(tiny_model, pgd(tiny_model, x, y, eps=eps, norm="l2", steps=10, early_stop=True), y)
    assert theirs < accuracy(tiny_model, x, y)
    assert ours <= theirs + 0.01


def test_pgd_robust_accuracy_non_increasing_in_eps_and_zero_at_eps_one(tiny_model, test_batch):
    x, y = test_batch[0][:100], test_batch[1][:100]
    accs = []
    for eps in (0.0, 2 / 255, 4 / 255, 8 / 255, 16 / 255, 32 / 255):
        g = torch.Generator().manual_seed(1)
        x_adv = pgd(tiny_model, x, y, eps=eps, steps=10, restarts=2, generator=g)
        accs.append(accuracy(tiny_model, x_adv, y))
    assert accs[0] == accuracy(tiny_model, x, y)
    assert all(b <= a + 1e-9 for a, b in zip(accs, accs[1:], strict=False)), accs
    assert accs[-1] < accs[0]
    assert accuracy(tiny_model, pgd(tiny_model, x, y, eps=1.0, steps=10), y) <= 0.01


def test_pgd_restarts_and_early_stop_never_weaker(tiny_model, test_batch):
    x, y = test_batch
    eps = 8 / 255
    one = pgd(tiny_model, x, y, eps=eps, steps=5, generator=torch.Generator().manual_seed(3))
    three = pgd(tiny_model, x, y, eps=eps, steps=5, restarts=3, generator=torch.Generator().manual_seed(3))
    assert accuracy(tiny_model, three, y) <= accuracy(tiny_model, one, y)


def test_pgd_generator_makes_random_start_reproducible(tiny_model, test_batch):
    x, y = test_batch[0][:16], test_batch[1][:16]
    a = pgd(tiny_model, x, y, eps=8 / 255, steps=3, generator=torch.Generator().manual_seed(5))
    b = pgd(tiny_model, x, y, eps=8 / 255, steps=3, generator=torch.Generator().manual_seed(5))
    c = pgd(tiny_model, x, y, eps=8 / 255, steps=3, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_pgd_targeted_reaches_targets(tiny_model, test_batch):
    x, y = test_batch[0][:50], test_batch[1][:50]
    target = (y + 1) % 3
    x_adv = pgd(tiny_model, x, target, eps=32 / 255, steps=20, targeted=True, early_stop=True)
    with torch.no_grad():
        hit = (tiny_model(x_adv).argmax(1) == target).float().mean().item()
    assert hit >= 0.9


def test_cw_margin_masks_true_class_with_negative_logits():
    """All logits negative: a one-hot multiply would pick 0 as the best other class (torchattacks #184)."""
    logits = torch.tensor([[-1.0, -5.0, -3.0], [-4.0, -2.0, -9.0]])
    y = torch.tensor([0, 1])
    assert torch.equal(other_max(logits, y), torch.tensor([-3.0, -4.0]))
    # untargeted CW loss = max_{j!=y} z_j - z_y
    assert torch.allclose(attack_loss(logits, y, "cw", targeted=False), torch.tensor([-2.0, -2.0]))


def test_pgd_cw_loss_attacks(tiny_model, test_batch):
    x, y = test_batch[0][:100], test_batch[1][:100]
    x_adv = pgd(tiny_model, x, y, eps=12 / 255, steps=10, loss="cw")
    assert accuracy(tiny_model, x_adv, y) < accuracy(tiny_model, x, y) - 0.2
