"""Tiny trained smallcnn checkpoint on phantom data (shared with the evaluation tests' fixture module)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluation"))
from fortify_eval_fixtures import PHANTOM, tiny_checkpoint_path  # noqa: E402

from fortify.certify import CertifySettings  # noqa: E402

# Seconds, not minutes: a handful of votes, one attack step; the numbers mean nothing.
TINY = dict(
    finetune_epochs=0,
    n0=10,
    n=20,
    alpha=0.01,
    batch_size=40,
    limit=4,
    radii=[0.2],
    eps=2 / 255,  # L2 radii 0.125 and 0.25 at 32 px
    attack_steps=1,
    attack_samples=2,
    attack_n=10,
    unit_size=2,
)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    return tiny_checkpoint_path(tmp_path_factory)


@pytest.fixture
def tiny_settings():
    def make(**overrides) -> CertifySettings:
        return CertifySettings(**{**TINY, **overrides})

    return make


@pytest.fixture
def phantom() -> str:
    return PHANTOM


@pytest.fixture(scope="session")
def tiny_payload(tiny_checkpoint, tmp_path_factory):
    """One tiny certification (no fine-tuning), shared by the report tests."""
    from fortify.certify import run_certify
    from fortify.runtime import Runtime

    out = tmp_path_factory.mktemp("certify-payload")
    return run_certify(
        tiny_checkpoint,
        None,
        data=PHANTOM,
        out_dir=out,
        settings=CertifySettings(**TINY),
        runtime=Runtime.resolve("cpu", "fp32"),
    )
