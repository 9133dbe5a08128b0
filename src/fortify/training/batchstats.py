"""Craft training attacks against batch statistics without touching batch-norm running statistics.

Why: between recalibrations (see `validation.recalibrate_batchnorm`) the running statistics lag the
weights, so an eval-mode attack during training aims at a model that is not the one being trained.
Madry et al. and Wong et al. craft training examples in train mode, i.e. against the statistics of
the batch itself. The attacks in fortify.attacks always switch their model to eval() (their
contract), so `BatchStatsModel` re-enables batch statistics inside its own forward instead.

Running statistics stay bit-identical: batch-norm layers run with `track_running_stats=False`
for the duration of the forward, so PyTorch neither reads nor writes running_mean, running_var
or num_batches_tracked (no save-and-restore, no in-place write into tensors that autograd saved).

Caveat: with batch statistics each sample's logits depend on the other samples in the batch
(through the batch mean and variance), so the adversarial batch is crafted jointly rather than
per sample, and its input gradients carry the cross-sample terms of batch norm, as in the
reference implementations. Under DDP each rank uses the statistics of its own shard.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

CRAFT_BN = ("batch", "running")


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@contextmanager
def frozen_batch_statistics(model: nn.Module) -> Iterator[None]:
    """Batch-norm layers normalize with batch statistics and leave their running buffers alone.

    Only the batch-norm layers change (other layers keep the mode the caller chose), and each
    layer's own `training` flag is set directly: `.train()` would recurse into children.
    """
    layers = batchnorm_layers(model)
    saved = [(m.training, m.track_running_stats) for m in layers]
    for m in layers:
        m.training = True
        m.track_running_stats = False  # forward then passes no running buffers to F.batch_norm
    try:
        yield
    finally:
        for m, (training, tracking) in zip(layers, saved, strict=True):
            m.training, m.track_running_stats = training, tracking


class BatchStatsModel(nn.Module):
    """`model` (parameters shared, not copied) whose forward uses frozen batch statistics.

    The model is a registered child, so an attack's eval()/train() and its toggling of
    `requires_grad` reach the real parameters exactly as they would without the wrapper.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        # Mirror the model's mode so an attack that restores `self.training` restores the model's.
        self.training = model.training

    def forward(self, *args, **kwargs) -> torch.Tensor:
        with frozen_batch_statistics(self.model):
            return self.model(*args, **kwargs)


def crafting_model(model: nn.Module, craft_bn: str) -> nn.Module:
    """The model the training attacks should see for `craft_bn` ("batch" or "running").

    A DDP wrapper is removed: attack forward passes must not go through DDP, whose forward
    prepares gradient synchronization and broadcasts buffers for a backward that never comes.
    """
    if craft_bn not in CRAFT_BN:
        raise ValueError(f"craft_bn must be one of {', '.join(CRAFT_BN)}, got {craft_bn!r}")
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    if craft_bn == "running" or not batchnorm_layers(model):
        return model  # the attacks' own eval() switch: running statistics (the old behaviour)
    return BatchStatsModel(model)
