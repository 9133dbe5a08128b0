"""Tiny phantom checkpoints (smallcnn, 32 px) shared with the evaluation tests, made once per session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluation"))
from fortify_eval_fixtures import PHANTOM, tiny_checkpoint_b_path, tiny_checkpoint_path  # noqa: E402

__all__ = ["PHANTOM"]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    return tiny_checkpoint_path(tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_checkpoint_b(tmp_path_factory):
    return tiny_checkpoint_b_path(tmp_path_factory)


@pytest.fixture(scope="session")
def explained(tiny_checkpoint, tiny_checkpoint_b, tmp_path_factory):
    """One full run (both models, 12 phantom test images, a 1-epoch smallcnn surrogate): (payload, out)."""
    from fortify.explain import ExplainSettings, run_explain
    from fortify.runtime import Runtime

    out = tmp_path_factory.mktemp("explain-run")
    settings = ExplainSettings(
        attack="pgd:eps=8/255,steps=3",
        n_boot=300,
        figure_per_class=1,
        surrogate="smallcnn",
        surrogate_epochs=1,
    )
    payload = run_explain(
        tiny_checkpoint,
        tiny_checkpoint_b,
        data=PHANTOM,
        out_dir=out,
        settings=settings,
        runtime=Runtime.resolve("cpu", "fp32"),
    )
    return payload, out
