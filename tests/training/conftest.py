"""Tiny training configs: phantom data, smallcnn, 32 px, fp32, one or two attack steps."""

from __future__ import annotations

import pytest

from fortify.training import TrainConfig


@pytest.fixture
def tiny_config(tmp_path):
    def make(**overrides) -> TrainConfig:
        base = dict(
            data="phantom:n=12",
            model="smallcnn",
            mode="standard",
            eps=8 / 255,
            epochs=1,
            image_size=32,
            batch_size=12,
            lr=0.05,
            precision="fp32",
            device="cpu",
            attack_steps=1,
            val_attack_steps=2,
            out=str(tmp_path / "run"),
        )
        base.update(overrides)
        return TrainConfig(**base)

    return make
