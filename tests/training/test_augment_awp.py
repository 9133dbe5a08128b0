"""Intensity jitter, rotation, zoom, balanced sampling, mixup and adversarial weight perturbation (AWP)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fortify.training import train
from fortify.training.augment import augment_batch, mixup_batch
from fortify.training.awp import perturb_weights, perturbed_weights


def _images(n: int = 6, size: int = 16) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(1))


def test_disabled_augmentations_draw_nothing_so_flip_only_runs_replay_as_before():
    x = _images()
    a = augment_batch(x, torch.Generator().manual_seed(0))
    b = augment_batch(x, torch.Generator().manual_seed(0), intensity=0.0, max_rotation=0.0, max_zoom=0.0)
    assert torch.equal(a, b)
    g = torch.Generator().manual_seed(0)
    flip = torch.rand(6, generator=g) < 0.5
    assert torch.equal(a, torch.where(flip.view(6, 1, 1, 1), x.flip(-1), x))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(intensity=0.3),
        dict(max_rotation=10.0),
        dict(intensity=0.2, max_rotation=5),
        dict(max_zoom=0.2),
    ],
)
def test_intensity_and_rotation_stay_in_range_change_pixels_and_are_seeded(kwargs):
    x = _images()
    flips_only = augment_batch(x, torch.Generator().manual_seed(3))
    out = augment_batch(x, torch.Generator().manual_seed(3), **kwargs)
    again = augment_batch(x, torch.Generator().manual_seed(3), **kwargs)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, again)
    assert (out - flips_only).abs().mean() > 1e-3


def test_intensity_jitter_is_monotone_per_image_so_no_edge_is_blurred():
    x = torch.linspace(0, 1, 64).view(1, 1, 8, 8).repeat(4, 1, 1, 1)
    out = augment_batch(x, torch.Generator().manual_seed(0), intensity=0.3)
    # flips reverse each row; either way the order of pixel values is kept (up to clipping ties)
    for img_in, img_out in zip(x, out, strict=True):
        flipped = not torch.equal(img_out.argsort(), img_in.argsort())
        src = img_in.flip(-1) if flipped else img_in
        order = src.flatten().argsort()
        assert (img_out.flatten()[order].diff() >= -1e-6).all()


def test_small_rotation_turns_the_image_about_its_centre():
    x = torch.zeros(1, 1, 33, 33)
    x[..., 16, 20:30] = 1.0  # a horizontal bar right of the centre
    out = augment_batch(x, torch.Generator().manual_seed(0), max_rotation=30.0)
    assert out[..., 16, 16] == pytest.approx(x[..., 16, 16].item(), abs=1e-6)  # the centre stays put
    assert not torch.allclose(out, x) and not torch.allclose(out, x.flip(-1))


def test_zoom_enlarges_a_window_of_the_image_and_invents_nothing_outside_it():
    x = torch.zeros(8, 1, 32, 32)
    x[..., 12:20, 12:20] = 1.0  # a bright square in the middle (flip-symmetric)
    out = augment_batch(x, torch.Generator().manual_seed(0), max_zoom=0.5)
    area_in, area_out = x.sum((1, 2, 3)), out.sum((1, 2, 3))
    assert (area_out >= area_in - 1e-3).all() and (area_out > area_in * 1.05).any()  # magnified, never shrunk
    flat = torch.full((2, 1, 16, 16), 0.4)
    assert torch.allclose(augment_batch(flat, torch.Generator().manual_seed(1), max_zoom=1.0), flat)


def test_balanced_sampling_draws_every_class_about_equally_often_in_an_epoch_of_the_same_length():
    from types import SimpleNamespace

    from fortify.distributed import DistInfo
    from fortify.training.epoch import epoch_batches

    y = torch.tensor([0] * 30 + [1] * 150 + [2] * 120)  # benign-like minority: 10%
    splits = SimpleNamespace(train_y=y, train_x=torch.zeros(300, 1, 2, 2), classes=["a", "b", "c"])

    def epoch(balanced: bool) -> torch.Tensor:
        run = SimpleNamespace(
            cfg=SimpleNamespace(balanced_sampling=balanced),
            splits=splits,
            data_gen=torch.Generator().manual_seed(0),
            info=DistInfo(),
            per_rank_batch=32,
        )
        return torch.cat(epoch_batches(run))

    plain, balanced = epoch(False), epoch(True)
    assert sorted(plain.tolist()) == list(range(300))  # a permutation: every image once
    assert balanced.numel() == 300
    share = torch.bincount(y[balanced], minlength=3).double() / 300
    assert ((share - 1 / 3).abs() < 0.08).all(), share  # 10% -> ~33% minority
    assert torch.equal(balanced, epoch(True))  # seeded by the run's generator


def test_mixup_is_a_convex_pair_blend_with_matching_targets_and_leaves_the_global_rng_alone():
    x, y = _images(8), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    mixed, soft = mixup_batch(x, y, 3, torch.Generator().manual_seed(5), alpha=0.4)
    assert torch.equal(torch.rand(1), before)  # the global RNG continued as if mixup had not run
    again, soft2 = mixup_batch(x, y, 3, torch.Generator().manual_seed(5), alpha=0.4)
    assert torch.equal(mixed, again) and torch.equal(soft, soft2)
    assert torch.allclose(soft.sum(1), torch.ones(8))
    lam = float(soft.max(1).values.min())  # the larger share of every row is lam or 1 - lam
    assert 0.5 <= lam <= 1
    one_hot = F.one_hot(y, 3).float()
    # each mixed image is lam * x_i + (1 - lam) * x_j for the j its target names
    for i in range(8):
        j = next(
            j
            for j in range(8)
            if torch.allclose(soft[i], lam * one_hot[i] + (1 - lam) * one_hot[j])
            and torch.allclose(mixed[i], lam * x[i] + (1 - lam) * x[j], atol=1e-6)
            or torch.allclose(soft[i], (1 - lam) * one_hot[i] + lam * one_hot[j])
            and torch.allclose(mixed[i], (1 - lam) * x[i] + lam * x[j], atol=1e-6)
        )
        assert 0 <= j < 8


def _tiny_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 14 * 14, 3)
    )


def test_awp_moves_each_weight_matrix_by_gamma_of_its_norm_uphill_and_restores_bit_exactly():
    net, x, y = _tiny_net(), _images(8), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    original = {k: v.clone() for k, v in net.state_dict().items()}

    def loss() -> torch.Tensor:
        return F.cross_entropy(net(x), y)

    with torch.no_grad():
        base = float(loss())
    restore = perturb_weights(net, loss, gamma=0.05)
    moved = {k: v.clone() for k, v in net.state_dict().items()}
    for (name, before), p in zip(original.items(), net.state_dict().values(), strict=True):
        rel = float((p - before).norm() / before.norm())
        if before.dim() > 1:
            assert rel == pytest.approx(0.05, rel=1e-4), name
        else:
            assert rel == 0, name  # biases are not perturbed
    with torch.no_grad():
        assert float(loss()) > base  # uphill
    restore()
    for name, v in net.state_dict().items():
        assert torch.equal(v, original[name]), name
    assert any(not torch.equal(moved[k], original[k]) for k in moved)
    assert len(perturbed_weights(net)) == 2


@pytest.mark.parametrize("mode", ["pgd", "trades"])
def test_awp_training_runs_changes_the_weights_it_trains_and_leaves_running_stats_to_the_real_step(
    tiny_config, mode
):
    plain = tiny_config(mode=mode, out=str(Path(tiny_config().out).parent / f"plain-{mode}"))
    awp = tiny_config(mode=mode, awp_gamma=0.01, out=str(Path(tiny_config().out).parent / f"awp-{mode}"))
    train(plain, progress=False)
    train(awp, progress=False)
    a = json.loads((Path(plain.out) / "metrics.jsonl").read_text().splitlines()[-1])
    b = json.loads((Path(awp.out) / "metrics.jsonl").read_text().splitlines()[-1])
    assert a["loss"] != b["loss"]  # the loss is taken at perturbed weights


def test_mixup_training_runs_and_differs_from_plain(tiny_config, tmp_path):
    plain = tiny_config(out=str(tmp_path / "plain"))
    mixed = tiny_config(out=str(tmp_path / "mixup"), mixup_alpha=0.4)
    train(plain, progress=False)
    train(mixed, progress=False)
    a = json.loads((Path(plain.out) / "metrics.jsonl").read_text().splitlines()[-1])
    b = json.loads((Path(mixed.out) / "metrics.jsonl").read_text().splitlines()[-1])
    assert a["loss"] != b["loss"]
