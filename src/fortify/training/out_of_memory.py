"""An out-of-memory error in training or validation becomes a one-line ConfigError naming the fix."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from fortify.errors import ConfigError
from fortify.runtime import Runtime
from fortify.training.config import TrainConfig


def is_out_of_memory(e: BaseException) -> bool:
    text = str(e).lower()
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text


@contextmanager
def oom_guard(cfg: TrainConfig, runtime: Runtime) -> Iterator[None]:
    """Re-raise running out of memory as a ConfigError (the run dir keeps the last completed epoch)."""
    try:
        yield
    except RuntimeError as e:
        if is_out_of_memory(e):
            raise ConfigError(
                f"batch size {cfg.batch_size} does not fit in memory on {runtime.device}; "
                "lower --batch-size (the run dir keeps the last completed epoch)"
            ) from None
        raise
