"""Folding batch norm: the same function and the same input gradient, without batch-norm layers."""

from __future__ import annotations

import pytest
import torch

from fortify.models import build_model
from fortify.models.fuse import count_batchnorm, fold_batchnorm


def _with_trained_statistics(model: torch.nn.Module) -> torch.nn.Module:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)
    return model.eval()


@pytest.mark.parametrize("name", ["smallcnn", "resnet18"])
def test_folded_model_is_the_same_function_with_the_same_input_gradient(name):
    model = _with_trained_statistics(build_model(name, 3, in_channels=1))
    folded = fold_batchnorm(model)
    assert count_batchnorm(model) > 0 and count_batchnorm(folded) == 0
    x = torch.rand(4, 1, 32, 32, requires_grad=True)
    out, out_f = model(x), folded(x)
    assert torch.allclose(out, out_f, atol=1e-4, rtol=1e-4)
    g = torch.autograd.grad(out[:, 0].sum(), x)[0]
    x2 = x.detach().clone().requires_grad_(True)
    g_f = torch.autograd.grad(folded(x2)[:, 0].sum(), x2)[0]
    assert torch.allclose(g, g_f, atol=1e-4, rtol=1e-3)
    assert model.training is False and count_batchnorm(model) > 0  # the original is untouched


def test_untraceable_model_is_used_as_it_is():
    class DataDependent(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2)

        def forward(self, x):
            if x.sum() > 0:  # symbolic tracing cannot follow this branch
                x = x * 2
            return self.bn(self.conv(x)).mean((2, 3))

    with pytest.warns(UserWarning, match="not folded"):
        same = fold_batchnorm(DataDependent())
    assert count_batchnorm(same) == 1
