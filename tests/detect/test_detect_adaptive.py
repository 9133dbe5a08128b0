"""Fit -> evaluate on the tiny task: the adaptive attack really attacks the detector, and the
threshold never sees test data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from detect_task import SIZE, make_task

from fortify.detect import DetectSettings, adaptive_pgd, detect_on_splits, fit_detector

pytestmark = pytest.mark.slow  # ~20 s: trains the tiny model, then fits and attacks it

EPS = 8 / 255
FAST = DetectSettings(
    eps=EPS,
    fit_images=45,
    fit_attacks=["fgsm", "pgd:steps=5"],
    cross_fit_folds=3,
    pgd_steps=10,
    cw_steps=5,
    cw_binary_steps=1,
    adaptive_steps=60,
    adaptive_lambdas=[1.0, 10.0],
    bootstrap=50,
)
# 32 test images per class: ~75 PGD examples fool the model, so a rate moves in steps of ~1.3 points
TRAIN, VAL_X, TEST = make_task(30, seed=1), make_task(20, seed=2)[0], make_task(32, seed=3)


def _run(model, runtime, *, val_x=VAL_X, test=TEST, settings=FAST) -> dict:
    return detect_on_splits(
        model,
        "smallcnn",
        TRAIN,
        val_x,
        test,
        num_classes=3,
        image_size=SIZE,
        settings=settings,
        runtime=runtime,
    )


@pytest.fixture(scope="module")
def result(tiny_model, cpu32) -> dict:
    torch.set_num_threads(1)
    return _run(tiny_model, cpu32)


def test_tiny_model_is_trained_and_pgd_is_detected(result):
    assert result["clean"]["accuracy"] >= 0.95
    pgd = result["attacks"]["pgd"]
    assert pgd["n_fooled"] >= 10  # eps = 8/255 breaks the undefended classifier...
    assert pgd["tpr_at_threshold"]["value"] >= 0.8  # ...and the detector catches plain PGD
    assert pgd["auroc"] > 0.9


def test_adaptive_attack_fools_the_classifier_and_evades_the_detector(result):
    pgd, ada = result["attacks"]["pgd"], result["attacks"]["adaptive"]
    assert ada["adaptive"] and not pgd["adaptive"]
    assert ada["n_fooled"] >= pgd["n_fooled"] > 0  # not a no-op; never weaker (PGD is a candidate)
    assert ada["tpr_at_threshold"]["value"] < pgd["tpr_at_threshold"]["value"]
    assert ada["attack_success"]["value"] > pgd["attack_success"]["value"]
    assert ada["auroc"] < pgd["auroc"]
    assert ada["perturbation"]["linf_max"] <= EPS + 1e-6
    head = result["headline"]
    assert head["attack"] == "adaptive" and head["tpr"] == ada["tpr_at_threshold"]["value"]
    assert head["defeated"] == (head["tpr"] < 0.5)
    if head["defeated"]:
        assert head["verdict"].startswith("detector defeated by an adaptive attack: TPR")


def test_adaptive_objective_is_what_evades(tiny_model, cpu32, result):
    """lambda = 0 leaves only the classifier term: evasion must then be rarer than with lambda > 0
    (guards against a sign error in the detector term, which the PGD candidate would hide)."""
    torch.set_num_threads(1)
    fitted = fit_detector(tiny_model, "smallcnn", TRAIN, VAL_X, num_classes=3, settings=FAST, runtime=cpu32)
    x, y = TEST
    keep = tiny_model(x).argmax(1) == y
    x, y = x[keep], y[keep]
    runs = {}
    for lam in (0.0, 10.0):
        r = adaptive_pgd(
            fitted.detector,
            x,
            y,
            eps=EPS,
            steps=40,
            lambdas=[lam],
            generator=torch.Generator().manual_seed(0),
        )
        runs[lam] = int(r.success.sum())
        assert ((r.x_adv - x).abs().amax() <= EPS + 1e-6) and r.x_adv.min() >= 0 and r.x_adv.max() <= 1
    assert runs[10.0] > runs[0.0]


def test_threshold_depends_on_validation_not_test_data(tiny_model, cpu32, result):
    torch.set_num_threads(1)
    cheap = FAST.replace(adaptive_steps=3, pgd_steps=2, bootstrap=0)
    other_test = make_task(5, seed=99)
    other_test = (torch.rand_like(other_test[0]), other_test[1])  # not even the same task
    a = _run(tiny_model, cpu32, settings=cheap)
    b = _run(tiny_model, cpu32, settings=cheap, test=other_test)
    assert a["detector"]["threshold"] == b["detector"]["threshold"]
    assert a["detector"]["head"]["weight"] == b["detector"]["head"]["weight"]
    assert a["clean"]["n"] != b["clean"]["n"]  # the test data did change
    assert a["detector"]["threshold"]["value"] == result["detector"]["threshold"]["value"]
    # ...and the threshold does follow the validation images: the 5%-FPR point of a shifted set.
    c = _run(tiny_model, cpu32, settings=cheap, val_x=(VAL_X + 0.1).clamp(0, 1))
    assert c["detector"]["threshold"]["value"] != a["detector"]["threshold"]["value"]
    assert c["detector"]["threshold"]["split"] == "val"
    val_fpr = a["detector"]["threshold"]["val_fpr"]
    assert val_fpr <= FAST.fpr + 1e-9 and np.isfinite(a["detector"]["threshold"]["value"])
