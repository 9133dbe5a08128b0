"""Each model under the attack: load the models and their common test set, attack every image, map the
model's attention on the clean and the adversarial image (CAMs in fp32), measure the shift between the two
maps, and build explain.json's entry for the model."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from fortify.attacks import AttackSpec
from fortify.errors import CheckpointError
from fortify.evaluation.batches import attack_dataset, predict
from fortify.evaluation.loading import TestSet, open_checkpoint, open_test_set
from fortify.explain.cam import TargetLayer, class_activation_maps, target_layer
from fortify.explain.settings import ExplainSettings
from fortify.explain.shift import shift_metrics
from fortify.explain.summaries import OUTCOMES, shift_summaries
from fortify.intervals import interval_or_none
from fortify.runtime import Runtime, seed_everything


@dataclass
class Inputs:
    """The labelled models and their common test set, loaded once for every step of an explanation."""

    checkpoints: dict[str, str | Path]
    models: dict[str, torch.nn.Module]  # prepared for the runtime, in eval mode
    infos: dict[str, dict]  # each checkpoint's record
    test: TestSet
    x: torch.Tensor
    y: torch.Tensor
    labels: np.ndarray  # y as numpy
    classes: list[str]
    size: int  # image size, the same for every checkpoint
    spec: AttackSpec
    settings: ExplainSettings
    runtime: Runtime  # attacks run here
    fp32: Runtime  # predictions and CAMs in fp32 whatever the attacks ran in


def load_inputs(
    checkpoints: dict[str, str | Path],
    data: str | Path,
    split: str | Path | None,
    settings: ExplainSettings,
    spec: AttackSpec,
    runtime: Runtime,
    progress: bool,
    cache_dir: str | Path | None = None,
) -> Inputs:
    """Open every checkpoint, check they agree on classes and image size, and load the test split."""
    models, infos = {}, {}
    for label, path in checkpoints.items():
        model, info = open_checkpoint(path)
        models[label], infos[label] = runtime.prepare_model(model).eval(), info
    first = next(iter(checkpoints))
    for label, info in infos.items():
        for key in ("classes", "image_size"):
            if info.get(key) != infos[first].get(key):
                raise CheckpointError(
                    f"{label} and {first} checkpoints differ in {key}: "
                    f"{info.get(key)!r} vs {infos[first].get(key)!r}"
                )
    test = open_test_set(
        data,
        infos[first],
        checkpoints[first],
        split=split,
        limit=settings.limit,
        progress=progress,
        cache_dir=cache_dir,
    )
    x, y = test.dataset.tensors()
    return Inputs(
        checkpoints=checkpoints,
        models=models,
        infos=infos,
        test=test,
        x=x,
        y=y,
        labels=y.numpy(),
        classes=list(test.dataset.classes),
        size=int(infos[first]["image_size"]),
        spec=spec,
        settings=settings,
        runtime=runtime,
        fp32=replace(runtime, precision="fp32"),
    )


@dataclass
class Explained:
    """One model under the attack, per test image: what the figures, the pairing and transfer read."""

    x_adv: torch.Tensor
    cam_clean: np.ndarray  # N x H x W maps of the clean images
    cam_adv: np.ndarray  # ... and of the adversarial ones
    rho: np.ndarray  # rank correlation of the two maps
    ovl: np.ndarray  # top overlap of the two maps
    clean_pred: torch.Tensor
    adv_pred: torch.Tensor
    clean_conf: torch.Tensor  # the probability of the predicted class
    adv_conf: torch.Tensor
    outcome: np.ndarray  # fooled | resisted | clean_error


def _outcomes(y: torch.Tensor, clean_pred: torch.Tensor, adv_pred: torch.Tensor) -> np.ndarray:
    clean_ok, adv_ok = (clean_pred == y).numpy(), (adv_pred == y).numpy()
    return np.where(~clean_ok, "clean_error", np.where(adv_ok, "resisted", "fooled"))


def _acc(pred: torch.Tensor, y: torch.Tensor) -> dict:
    k, n = int((pred == y).sum()), len(y)
    return {"accuracy": k / n, "accuracy_ci": interval_or_none(k, n), "correct": k, "n": n}


def explain_model(inputs: Inputs, label: str, model: torch.nn.Module, start) -> tuple[dict, Explained]:
    """Attack one model, map its attention on the clean and adversarial images, measure the shift."""
    settings, x, y = inputs.settings, inputs.x, inputs.y
    layer = target_layer(model, inputs.infos[label]["model"], inputs.size)
    t = time.perf_counter()
    clean_pred, clean_prob = predict(model, x, inputs.fp32, settings.batch_size)
    seed_everything(settings.seed)
    advance = start(f"explain: {label} {inputs.spec}", len(x))
    x_adv = attack_dataset(inputs.spec, model, x, y, inputs.runtime, settings.batch_size, advance)
    adv_pred, adv_prob = predict(model, x_adv, inputs.fp32, settings.batch_size)
    t_attack = time.perf_counter() - t
    t = time.perf_counter()
    if settings.target == "predicted":
        target_clean, target_adv = clean_pred, adv_pred
    else:
        target_clean = target_adv = y
    kw = dict(layer=layer, method=settings.method, batch_size=settings.batch_size)
    cam_clean = class_activation_maps(model, x, target_clean, **kw)
    cam_adv = class_activation_maps(model, x_adv, target_adv, **kw)
    t_cam = time.perf_counter() - t
    t = time.perf_counter()
    rho, ovl = shift_metrics(cam_clean, cam_adv, grid=settings.grid, fraction=settings.top_fraction)
    held = Explained(
        x_adv=x_adv,
        cam_clean=cam_clean,
        cam_adv=cam_adv,
        rho=rho,
        ovl=ovl,
        clean_pred=clean_pred,
        adv_pred=adv_pred,
        clean_conf=clean_prob.gather(1, clean_pred[:, None])[:, 0],
        adv_conf=adv_prob.gather(1, adv_pred[:, None])[:, 0],
        outcome=_outcomes(y, clean_pred, adv_pred),
    )
    entry = _model_entry(inputs, label, layer, held)
    entry["seconds"] = {"attack": t_attack, "cam": t_cam, "metrics": time.perf_counter() - t}
    return entry, held


def _model_entry(inputs: Inputs, label: str, layer: TargetLayer, held: Explained) -> dict:
    """explain.json's entry for one model: accuracies, outcomes, shift summaries and per-image values."""
    settings, y, outcome = inputs.settings, inputs.y, held.outcome
    stats = dict(classes=inputs.classes, seed=settings.seed, n_boot=settings.n_boot)
    return {
        "checkpoint": str(inputs.checkpoints[label]),
        "model": inputs.infos[label]["model"],
        "mode": inputs.infos[label].get("mode"),
        "target_layer": layer.name,
        "cam_grid": list(layer.grid),
        "clean": _acc(held.clean_pred, y),
        "adversarial": _acc(held.adv_pred, y),
        "outcome_counts": {o: int((outcome == o).sum()) for o in OUTCOMES},
        "degenerate_maps": {
            "clean": int(sum(np.ptp(m) == 0 for m in held.cam_clean)),
            "adversarial": int(sum(np.ptp(m) == 0 for m in held.cam_adv)),
        },
        "rank_correlation": shift_summaries(held.rho, inputs.labels, outcome, **stats),
        "top_overlap": shift_summaries(held.ovl, inputs.labels, outcome, **stats),
        "per_image": {
            "clean_pred": held.clean_pred.tolist(),
            "clean_confidence": [round(float(v), 5) for v in held.clean_conf],
            "adv_pred": held.adv_pred.tolist(),
            "adv_confidence": [round(float(v), 5) for v in held.adv_conf],
            "outcome": outcome.tolist(),
            "rank_correlation": [None if math.isnan(v) else round(float(v), 5) for v in held.rho],
            "top_overlap": [None if math.isnan(v) else round(float(v), 5) for v in held.ovl],
        },
    }
