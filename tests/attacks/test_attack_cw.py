"""Carlini-Wagner L2: success flags are honest, L2 no worse than ART's, saturated pixels move."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from attack_helpers import accuracy

from fortify.attacks import cw_l2, cw_l2_detailed


def _pred(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


def test_every_success_is_misclassified_and_l2_is_exact(tiny_model, test_batch):
    x, y = test_batch[0][:40], test_batch[1][:40]
    res = cw_l2_detailed(tiny_model, x, y, steps=50, binary_steps=4, c=0.1)
    assert res.success.any()
    assert (_pred(tiny_model, res.x_adv)[res.success] != y[res.success]).all()
    measured = (res.x_adv - x).flatten(1).norm(dim=1)
    assert torch.allclose(measured[res.success], res.l2[res.success], atol=1e-4)
    # failures: the input back, L2 = inf
    assert torch.isinf(res.l2[~res.success]).all()
    assert torch.equal(res.x_adv[~res.success], x[~res.success])
    assert torch.equal(cw_l2(tiny_model, x, y, steps=50, binary_steps=4, c=0.1), res.x_adv)


def test_kappa_gives_a_confident_margin(tiny_model, test_batch):
    x, y = test_batch[0][:20], test_batch[1][:20]
    res = cw_l2_detailed(tiny_model, x, y, steps=50, binary_steps=4, c=1.0, kappa=2.0)
    assert res.success.any()
    with torch.no_grad():
        logits = tiny_model(res.x_adv[res.success])
    yy = y[res.success]
    true = logits.gather(1, yy[:, None]).squeeze(1)
    other = logits.scatter(1, yy[:, None], float("-inf")).amax(1)
    assert (other - true >= 2.0 - 1e-4).all()


def test_saturated_pixels_can_move(tiny_model, test_batch):
    """Pixels at exactly 0 and 1 (common in CT) must be perturbable: the 0.999999 tanh shrink.

    They start at w = atanh(+-0.999999) ~ +-7.25, where tanh is flat, so moving them needs w to
    travel several units: lr=0.1 does that within 200 steps (at lr=0.01 and 100 steps they move
    only ~1e-6; see the attack's docstring). Without the shrink w would be infinite and they never move.
    """
    x, y = test_batch[0][:10].clone(), test_batch[1][:10]
    x[:, :, :4, :] = 0.0
    x[:, :, -4:, :] = 1.0
    keep = _pred(tiny_model, x) == y
    x, y = x[keep], y[keep]
    res = cw_l2_detailed(tiny_model, x, y, steps=200, binary_steps=1, c=1.0, lr=0.1, abort_early=False)
    assert res.success.any()
    assert torch.isfinite(res.x_adv).all()
    moved = (res.x_adv - x).abs()[res.success]
    assert moved[:, :, :4, :].max().item() > 1e-3  # black rows brightened
    assert moved[:, :, -4:, :].max().item() > 1e-3  # white rows darkened


def test_already_misclassified_samples_cost_nothing(tiny_model, test_batch):
    x, y = test_batch[0][:20], test_batch[1][:20]
    wrong = (y + 1) % 3
    res = cw_l2_detailed(tiny_model, x, wrong, steps=5, binary_steps=1)
    mis = _pred(tiny_model, x) != wrong
    assert mis.any()
    assert res.success[mis].all() and (res.l2[mis] == 0).all()
    assert torch.equal(res.x_adv[mis], x[mis])


def test_max_l2_budget_counts_large_perturbations_as_robust(tiny_model, test_batch):
    x, y = test_batch[0][:30], test_batch[1][:30]
    free = cw_l2_detailed(tiny_model, x, y, steps=40, binary_steps=3, c=0.1)
    budget = float(free.l2[free.success].median())
    capped = cw_l2_detailed(tiny_model, x, y, steps=40, binary_steps=3, c=0.1, max_l2=budget)
    assert torch.equal(capped.success, free.l2 <= budget)  # deterministic: same search, same answer
    assert 0 < capped.success.sum() < free.success.sum()
    assert torch.equal(capped.x_adv[~capped.success], x[~capped.success])
    assert accuracy(tiny_model, capped.x_adv, y) == pytest.approx(1 - capped.success.float().mean().item())


def test_l2_no_worse_than_art(tiny_model, test_batch):
    from art.attacks.evasion import CarliniL2Method
    from art.estimators.classification import PyTorchClassifier

    x, y = test_batch[0][:12], test_batch[1][:12]
    settings = dict(steps=30, binary_steps=5, c=0.1, lr=0.01)
    ours = cw_l2_detailed(tiny_model, x, y, **settings)
    clf = PyTorchClassifier(
        tiny_model,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=tuple(x.shape[1:]),
        nb_classes=3,
        clip_values=(0.0, 1.0),
    )
    art = CarliniL2Method(
        clf,
        confidence=0.0,
        learning_rate=0.01,
        binary_search_steps=5,
        max_iter=30,
        initial_const=0.1,
        batch_size=12,
        verbose=False,
    )
    x_art = torch.from_numpy(art.generate(x.numpy(), y=np.eye(3, dtype=np.float32)[y.numpy()]))
    art_ok = _pred(tiny_model, x_art) != y
    art_l2 = (x_art - x).flatten(1).norm(dim=1)
    assert ours.success.sum() >= art_ok.sum()
    both = ours.success & art_ok
    assert both.any()
    assert ours.l2[both].median() <= art_l2[both].median() + 1e-6
    assert ours.l2[both].sum() <= art_l2[both].sum() + 1e-6
