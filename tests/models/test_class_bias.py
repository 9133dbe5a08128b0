"""ClassBias: the operating point as the model's last layer (fortify.models.class_bias)."""

import warnings

import pytest
import torch

from fortify.models import ClassBias, build_model, with_class_bias
from fortify.models.fuse import fold_batchnorm


def test_class_bias_adds_one_offset_per_class():
    layer = ClassBias([1.0, 0.0, -2.0])
    logits = torch.zeros(4, 3)
    assert torch.equal(layer(logits), torch.tensor([[1.0, 0.0, -2.0]]).expand(4, 3))


@pytest.mark.parametrize("bad", [[], [float("nan"), 0.0], [float("inf")]])
def test_class_bias_refuses_what_is_not_finite(bad):
    with pytest.raises(ValueError):
        ClassBias(bad)


def test_with_class_bias_keeps_the_weights_file_layout():
    torch.manual_seed(0)
    model = build_model("smallcnn", 3).eval()
    keys = list(model.state_dict())
    x = torch.rand(2, 1, 32, 32)
    before = model(x).detach()
    biased = with_class_bias(model, [0.5, 0.0, -0.5])
    assert list(biased.state_dict()) == keys  # the offsets are not weights: same safetensors file
    assert torch.allclose(biased(x), before + torch.tensor([0.5, 0.0, -0.5]))


def test_zero_or_missing_bias_leaves_the_model_alone():
    model = build_model("smallcnn", 3)
    assert with_class_bias(model, None) is model
    assert with_class_bias(model, [0.0, 0.0, 0.0]) is model
    assert not any(isinstance(m, ClassBias) for m in model.modules())


def test_batchnorm_folding_traces_through_the_offsets():
    # Evaluation attacks a BN-folded copy (torch.fx): the offsets must survive the trace, and a failed
    # trace (which falls back with a warning) would fail this test.
    torch.manual_seed(0)
    model = with_class_bias(build_model("smallcnn", 3).eval(), [2.0, 0.0, 0.0])
    x = torch.rand(3, 1, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        folded = fold_batchnorm(model)
    assert torch.allclose(folded(x), model(x), atol=1e-5)
