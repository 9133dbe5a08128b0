"""Smoke test on the real IQ-OTH/NCCD data: one epoch of smallcnn on a small per-class slice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fortify.training import TrainConfig, load_model, train


@pytest.mark.real_data
def test_smallcnn_one_epoch_on_real_slice(real_data_path, cache_dir, tmp_path):
    cfg = TrainConfig(
        data=str(real_data_path),
        model="smallcnn",
        mode="fast",
        eps=2 / 255,
        epochs=1,
        image_size=64,
        batch_size=16,
        limit_per_class=8,
        cache_dir=str(cache_dir),
        out=str(tmp_path / "run"),
        val_attack_steps=2,
    )
    summary = train(cfg, progress=False)
    assert summary["epochs_completed"] == 1
    run = Path(cfg.out)
    split = json.loads((run / "split.json").read_text())
    assert split["dataset"]["classes"] == ["benign", "malignant", "normal"]
    _, info = load_model(run / "best.safetensors")
    assert info["dataset"]["synthetic"] is False and info["dataset"]["root"]
    assert info["classes"] == ["benign", "malignant", "normal"] and info["image_size"] == 64
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert 0 <= record["val_robust_acc"] <= 1 and record["loss"] > 0
