"""Fixtures for the attack tests (helpers live in attack_helpers.py)."""

from __future__ import annotations

import pytest
import torch
from attack_helpers import TinyCNN, make_data, train_tiny


@pytest.fixture(scope="session")
def tiny_model() -> TinyCNN:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_tiny()
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def test_batch() -> tuple[torch.Tensor, torch.Tensor]:
    return make_data(300, seed=99)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: thread synchronisation costs more than it saves on a shared 2-core box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
