"""Fixtures of the detect tests: the tiny trained model (see detect_task.py) and a CPU fp32 runtime."""

from __future__ import annotations

import pytest
import torch
from detect_task import train_tiny

from fortify.runtime import Runtime


@pytest.fixture(autouse=True)
def one_thread():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="session")
def tiny_model() -> torch.nn.Module:
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_tiny()
    finally:
        torch.set_num_threads(saved)


@pytest.fixture(scope="session")
def cpu32() -> Runtime:
    return Runtime.resolve("cpu", "fp32", channels_last=False)
