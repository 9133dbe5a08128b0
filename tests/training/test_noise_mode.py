"""The `noise` training mode (Gaussian data augmentation for randomized smoothing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fortify.errors import ConfigError
from fortify.models import build_model
from fortify.runtime import Runtime
from fortify.training import ADVERSARIAL_MODES, MODES, TrainConfig, load_model, train
from fortify.training.recipes import training_step_loss

RUNTIME = Runtime.resolve("cpu", "fp32", channels_last=False)


def _step(model, x, y, cfg):
    return training_step_loss(
        model, model, x, y, cfg=cfg, eps=0.0, class_weights=None, batch_index=0, epoch=0, runtime=RUNTIME
    )


def test_noise_mode_trains_on_unclipped_gaussian_copies_not_on_the_clean_batch():
    torch.manual_seed(0)
    model = build_model("smallcnn", 3).train()
    x, y = torch.rand(8, 1, 16, 16), torch.randint(0, 3, (8,))
    seen = []
    model.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    cfg = TrainConfig(mode="noise", noise_sigma=0.5)
    out = _step(model, x, y, cfg)
    standard = _step(model, x, y, TrainConfig(mode="standard"))
    noisy, clean = seen
    assert torch.equal(clean, x) and not torch.allclose(noisy, x)
    delta = noisy - x
    assert delta.std().item() == pytest.approx(0.5, rel=0.1) and abs(delta.mean().item()) < 0.05
    assert noisy.min() < 0 and noisy.max() > 1  # no clipping: the distribution the certificate is about
    assert not torch.isclose(out.loss, standard.loss)
    assert out.clean_correct is None and out.adv_correct is not None and out.attack == "gaussian"
    out.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_noise_is_a_mode_but_not_an_adversarial_one():
    assert "noise" in MODES and "noise" not in ADVERSARIAL_MODES
    cfg = TrainConfig(mode="noise", eps=0.0).validate()  # needs no eps
    assert not cfg.adversarial and not cfg.robust_validation


@pytest.mark.parametrize("sigma", [0.0, -0.25, float("nan")])
def test_invalid_noise_sigma_is_a_one_line_config_error(sigma):
    with pytest.raises(ConfigError, match="noise-sigma must be > 0") as e:
        TrainConfig(mode="noise", noise_sigma=sigma).validate()
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_noise_mode_trains_a_tiny_model_one_epoch(tiny_config):
    cfg = tiny_config(mode="noise", noise_sigma=0.25)
    summary = train(cfg, progress=False)
    rec = json.loads((Path(cfg.out) / "metrics.jsonl").read_text().splitlines()[0])
    assert rec["loss"] > 0 and rec["train_adv_acc"] is not None and rec["train_clean_acc"] is None
    assert rec["val_robust_acc"] is None and rec["eps"] == 0  # no attack, no eps warm-up
    assert summary["selection"] == "val_clean_acc"
    _, info = load_model(Path(cfg.out) / "best.safetensors")
    assert info["mode"] == "noise" and info["config"]["noise_sigma"] == 0.25


def test_train_cli_takes_noise_sigma_and_refuses_a_bad_one(tmp_path, capsys):
    from fortify.cli import main

    with pytest.raises(SystemExit) as exc:
        main(
            [
                "train",
                "--data",
                "phantom:n=4",
                "--mode",
                "noise",
                "--noise-sigma",
                "0",
                "--out",
                str(tmp_path),
            ]
        )
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code != 0 and len(err) == 1 and err[0].startswith("fortify: error: noise-sigma")
