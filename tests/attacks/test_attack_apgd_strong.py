"""APGD (3-class-safe DLR) and the `strong` ensemble."""

from __future__ import annotations

import importlib
import inspect

import pytest
import torch
from attack_helpers import accuracy, train_tiny

from fortify.attacks import StrongResult, apgd, parse_spec, pgd, strong, strong_detailed
from fortify.attacks._common import dlr_loss, dlr_targeted_loss

apgd_module = importlib.import_module("fortify.attacks.apgd")  # the package attribute `apgd` is the function
strong_module = importlib.import_module("fortify.attacks.strong")


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
    res = strong_detailed(model, x, y, eps=8 / 255, steps=3, square_queries=20)
    assert res.x_adv.shape == x.shape
    assert not ((res.fooled_by == 1) | (res.fooled_by == 2)).any()  # no DLR component ran


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
    both = strong(
        tiny_model, x, y, eps=eps, steps=10, square_queries=50, generator=torch.Generator().manual_seed(4)
    )
    assert accuracy(tiny_model, both, y) <= accuracy(tiny_model, first, y)
    assert accuracy(tiny_model, both, y) < accuracy(tiny_model, x, y)


def test_strong_defaults_are_autoattack_standard():
    params = inspect.signature(strong).parameters
    assert params["steps"].default == 100 and params["square_queries"].default == 5000
    assert params["n_target_classes"].default == 9  # capped at num_classes - 1: every wrong class
    assert inspect.signature(strong_detailed).parameters.keys() == params.keys()
    spec = parse_spec("strong:eps=2/255,steps=100,square_queries=5000")
    assert spec.params == {"eps": 2 / 255, "steps": 100, "square_queries": 5000}
    assert parse_spec("strong:eps=2/255,square_queries=0").params["square_queries"] == 0


def test_strong_detailed_reports_who_fooled_whom(tiny_model, test_batch):
    x, y = test_batch[0][:40].clone(), test_batch[1][:40].clone()
    y[:5] = (y[:5] + 1) % 3  # five samples misclassified from the start
    kw = dict(eps=8 / 255, steps=5, square_queries=30)
    res = strong_detailed(tiny_model, x, y, generator=torch.Generator().manual_seed(0), **kw)
    assert isinstance(res, StrongResult)
    assert res.component_names == ("apgd-ce", "apgd-dlr", "apgd-t-dlr", "pgd-cw", "square")
    assert res.fooled_by.dtype == torch.int64 and res.fooled_by.shape == y.shape
    with torch.no_grad():
        clean_wrong = tiny_model(x).argmax(1) != y
        rescored = tiny_model(res.x_adv).argmax(1) != y
    assert torch.equal(res.fooled_by == strong_module.CLEAN_MISCLASSIFIED, clean_wrong)
    assert torch.equal(res.success, rescored)
    assert torch.equal(res.success, res.fooled_by != strong_module.ROBUST)
    assert (res.fooled_by >= 0).any() and (res.fooled_by == strong_module.ROBUST).any()
    # robust and clean-misclassified samples get their input back
    keep = res.fooled_by < 0
    assert torch.equal(res.x_adv[keep], x[keep])
    same = strong(tiny_model, x, y, generator=torch.Generator().manual_seed(0), **kw)
    assert torch.equal(same, res.x_adv)


@pytest.mark.parametrize("norm, eps", [("linf", 8 / 255), ("l2", 0.5)])
def test_square_runs_last_and_only_on_the_survivors(norm, eps, monkeypatch, tiny_model, test_batch):
    x, y = test_batch[0][:40], test_batch[1][:40]
    calls = []
    real_square = strong_module.square

    def spy(model, xs, ys, **kw):
        calls.append((xs.shape[0], kw))
        return real_square(model, xs, ys, **kw)

    monkeypatch.setattr(strong_module, "square", spy)
    res = strong_detailed(
        tiny_model,
        x,
        y,
        eps=eps,
        norm=norm,
        steps=5,
        square_queries=40,
        generator=torch.Generator().manual_seed(0),
    )
    survivors = ((res.fooled_by == 4) | (res.fooled_by == strong_module.ROBUST)).sum().item()
    assert survivors > 0
    assert len(calls) == 1 and calls[0][0] == survivors
    assert calls[0][1]["queries"] == 40 and calls[0][1]["norm"] == norm and calls[0][1]["eps"] == eps
    calls.clear()
    strong_detailed(tiny_model, x, y, eps=eps, norm=norm, steps=5, square_queries=0)
    assert calls == []


def test_strong_standard_version_runs_autoattacks_standard_set_only(tiny_model, test_batch):
    from fortify.attacks.spec import STRONG_VERSIONS
    from fortify.errors import SpecError
    from fortify.evaluation.batches import count_passes

    assert tuple(strong_module.VERSIONS) == STRONG_VERSIONS
    x, y = test_batch[0][:40], test_batch[1][:40]
    kw = dict(eps=2 / 255, steps=5, square_queries=0)
    passes = {}
    for version in ("full", "standard"):
        with count_passes(tiny_model) as count:
            res = strong_detailed(
                tiny_model, x, y, version=version, generator=torch.Generator().manual_seed(0), **kw
            )
        passes[version] = count.gradient_evaluations
        used = {res.component_names[i] for i in res.fooled_by[res.fooled_by >= 0].tolist()}
        assert used <= set(strong_module.VERSIONS[version])
        robust = int((res.fooled_by == strong_module.ROBUST).sum())
    assert robust > 0  # so the components after APGD-CE had samples to work on
    assert passes["standard"] < passes["full"]
    with pytest.raises(SpecError, match="unknown version"):
        parse_spec("strong:eps=2/255,version=lite")
    assert parse_spec("strong:eps=2/255,version=standard").params["version"] == "standard"
