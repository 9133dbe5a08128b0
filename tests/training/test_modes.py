"""Every mode trains a tiny epoch and leaves a complete run directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fortify.fileio import read_yaml
from fortify.training import ADVERSARIAL_MODES, MODES, TrainConfig, load_model, train
from fortify.training import epoch as epoch_module


@pytest.mark.parametrize("mode", MODES)
def test_mode_runs_one_epoch_and_writes_run_dir(tiny_config, mode):
    cfg = tiny_config(mode=mode)
    summary = train(cfg, progress=False)
    run = Path(cfg.out)
    for name in (
        "config.yaml",
        "split.json",
        "metrics.jsonl",
        "best.safetensors",
        "best.json",
        "last.safetensors",
        "last.json",
        "last.state.pt",
    ):
        assert (run / name).is_file(), name
    assert not list(run.glob(".*.tmp")), "temporary files left behind"
    assert TrainConfig.from_dict(read_yaml(run / "config.yaml")) == cfg
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1]
    rec = records[0]
    for key in ("loss", "train_acc", "val_clean_acc", "val_robust_acc", "epoch_seconds", "lr", "eps"):
        assert key in rec, key
    assert rec["loss"] > 0 and 0 <= rec["val_clean_acc"] <= 1
    if mode not in ADVERSARIAL_MODES:  # standard and noise: no attack, no robust validation
        assert rec["val_robust_acc"] is None and rec["eps"] == 0
        assert summary["selection"] == "val_clean_acc"
    else:
        assert 0 <= rec["val_robust_acc"] <= rec["val_clean_acc"] + 1e-9 or rec["val_robust_acc"] <= 1
        assert rec["eps"] == pytest.approx(cfg.eps)  # warm-up of 1 epoch reaches eps at its last batch
        assert rec["train_adv_acc"] is not None
        assert summary["selection"] == "val_robust_acc"
    model, info = load_model(run / "best.safetensors")
    assert info["mode"] == mode and info["classes"] == ["benign", "malignant", "normal"]
    assert info["split"]["in_run_dir"] and len(info["split"]["sha256"]) == 64
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 3)


def test_mixed_rotates_fgsm_pgd_cw_within_every_epoch(tiny_config, monkeypatch):
    seen: list[tuple[int, str]] = []
    real = epoch_module.training_step_loss

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        seen.append((kwargs["epoch"], out.attack))
        return out

    monkeypatch.setattr(epoch_module, "training_step_loss", spy)
    cfg = tiny_config(mode="mixed", epochs=2, batch_size=6, eps_warmup_epochs=0)  # 3-4 batches per epoch
    train(cfg, progress=False)
    for epoch in (0, 1):
        assert {a for e, a in seen if e == epoch} == {"fgsm", "pgd", "cw"}


def test_eps_warms_up_linearly(tiny_config):
    cfg = tiny_config(mode="fast", epochs=2, eps_warmup_epochs=2, val_robust=False)
    train(cfg, progress=False)
    records = [json.loads(x) for x in (Path(cfg.out) / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["eps"] == pytest.approx(cfg.eps / 2, rel=0.35)  # last batch of epoch 1
    assert records[1]["eps"] == pytest.approx(cfg.eps)


def test_mart_loss_is_boosted_ce_when_the_attack_changed_nothing():
    from fortify.training.recipes import mart_loss

    logits = torch.tensor([[2.0, 1.0, -1.0], [0.0, 3.0, 0.5]])
    y = torch.tensor([0, 2])
    p = logits.softmax(1)
    wrong = torch.tensor([1, 1])  # the most likely class other than y
    expected = torch.nn.functional.cross_entropy(logits, y) - torch.log(1.0001 - p[[0, 1], wrong]).mean()
    assert torch.isclose(mart_loss(logits, logits, y, beta=100.0), expected, atol=1e-5)  # KL is 0


def test_mart_weights_the_kl_by_how_unsure_the_clean_prediction_is():
    from fortify.training.recipes import mart_loss

    y = torch.tensor([0])
    adv = torch.tensor([[0.0, 2.0, 0.0]])
    sure = torch.tensor([[30.0, 0.0, 0.0]])  # p_y(clean) ~ 1: the KL term is switched off
    unsure = torch.tensor([[0.0, 0.5, 0.0]])  # clean prediction already wrong: the KL term counts
    assert torch.isclose(mart_loss(sure, adv, y, beta=0.0), mart_loss(sure, adv, y, beta=50.0), atol=1e-4)
    assert mart_loss(unsure, adv, y, beta=50.0) > mart_loss(unsure, adv, y, beta=0.0) + 1.0
