"""The detector module: layer table, differentiability, and agreement with a numpy/scipy reference
computed on features taken from the network by hand (not through the hooks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from detect_task import make_task, tiny_smallcnn
from scipy.spatial.distance import mahalanobis

from fortify.detect import Detector, MahalanobisScore, fit_gaussian, resolve_layers
from fortify.detect.batches import features_of
from fortify.errors import ConfigError
from fortify.models import build_model


@torch.no_grad()
def _by_hand(model: torch.nn.Module, x: torch.Tensor) -> list[np.ndarray]:
    """smallcnn's three conv blocks, run explicitly and averaged over space."""
    out, h = [], model.normalize(x)
    for block in model.net.features:
        h = block(h)
        out.append(h.mean(dim=(2, 3)).double().numpy())
    return out


def test_layer_table_and_user_layers():
    resnet = build_model("resnet18", 3)
    assert resolve_layers(resnet, "resnet18") == ["net.layer1", "net.layer2", "net.layer3", "net.layer4"]
    small = tiny_smallcnn()
    assert resolve_layers(small, "smallcnn") == ["net.features.0", "net.features.1", "net.features.2"]
    with pytest.raises(ConfigError, match="no default detector layers") as e:
        resolve_layers(small, "vgg16")
    assert "\n" not in str(e.value)
    assert resolve_layers(small, "vgg16", ["net.features.1"]) == ["net.features.1"]
    with pytest.raises(ConfigError, match="not a module"):
        resolve_layers(small, "smallcnn", ["net.layer9"])


def test_score_matches_reference_and_is_differentiable(tiny_model, cpu32):
    model = tiny_model
    layers = resolve_layers(model, "smallcnn")
    x_fit, y_fit = make_task(20, seed=11)
    _, feats = features_of(model, layers, x_fit, cpu32, 64)
    gaussians = [fit_gaussian(f, y_fit.numpy(), 3, shrinkage=0.05) for f in feats]
    score = MahalanobisScore(gaussians)
    weight, bias = np.array([0.7, -0.2, 1.3]), -0.4
    score.set_head(weight, bias)
    detector = Detector(model, layers, score)

    x, y = make_task(4, seed=12)
    x = x.clone().requires_grad_(True)
    logits, d = detector(x)
    (grad,) = torch.autograd.grad(d.sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert torch.allclose(logits, model(x).float())

    # Reference: the same layers by hand, distances with scipy and the precision the fit recorded.
    ref_dist = []
    for f, g in zip(_by_hand(model, x.detach()), gaussians, strict=True):
        ref_dist.append([min(mahalanobis(v, mu, g.precision) for mu in g.means) for v in f])
    ref = np.asarray(ref_dist).T @ weight + bias
    np.testing.assert_allclose(d.detach().double().numpy(), ref, rtol=1e-4, atol=1e-4)


def test_input_preprocessing_moves_towards_the_class_means(tiny_model, cpu32):
    layers = resolve_layers(tiny_model, "smallcnn")
    x_fit, y_fit = make_task(20, seed=11)
    _, feats = features_of(tiny_model, layers, x_fit, cpu32, 64)
    score = MahalanobisScore([fit_gaussian(f, y_fit.numpy(), 3) for f in feats])
    x, _ = make_task(4, seed=13)
    plain = Detector(tiny_model, layers, score).layer_scores(x)[1]
    x = x.clone().requires_grad_(True)
    pre = Detector(tiny_model, layers, score, preprocess_eps=0.002).layer_scores(x)[1]
    # Lee's step goes down the score's gradient: every layer's mean distance shrinks.
    assert (pre.mean(0) < plain.mean(0)).all()
    (grad,) = torch.autograd.grad(pre.sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
