"""explain.json: the payload assembled from the per-model entries, the paired numbers, the figures and
transfer, with the blocks that say what was explained (images), how (attack) and what each number means."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from fortify.explain.cam import METHODS
from fortify.explain.maps import Inputs
from fortify.explain.settings import ExplainSettings
from fortify.explain.summaries import verdict

FORMAT = "fortify-explain/1"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def explain_payload(
    inputs: Inputs,
    data: str | Path,
    per_model: dict[str, dict],
    paired: dict | None,
    figures: tuple[dict[str, str], list[int]],
    transfer: dict | None,
    seconds: dict[str, float],
    started: float,
) -> dict:
    """explain.json's dict; `seconds` gains each model's timings and the total, `figures` is
    ({label: path}, the test images' indices shown in them)."""
    settings = inputs.settings
    for label in per_model:
        for part, s in per_model[label]["seconds"].items():
            seconds[f"{label}_{part}"] = s
    total = time.perf_counter() - started
    ds = inputs.test.dataset
    paths, rows = figures
    return {
        "format": FORMAT,
        "created": _now(),
        "checkpoints": {label: str(p) for label, p in inputs.checkpoints.items()},
        "data": _data_record(inputs, data),
        "settings": settings.to_dict(),
        "attack": _attack_record(inputs),
        "cam": _cam_record(settings, per_model),
        "models": per_model,
        "paired": paired,
        "verdict": verdict(per_model, paired, settings.top_fraction),
        "figures": paths,
        "figure_images": [ds.paths[i] for i in rows],
        "transfer": transfer,
        "runtime": inputs.runtime.describe(),
        "seconds": {**seconds, "total": total},
        "seconds_per_image": total / len(ds),
    }


def _data_record(inputs: Inputs, data: str | Path) -> dict:
    """explain.json's "data" block: the test images explained, in order, with their labels."""
    ds = inputs.test.dataset
    return {
        "data": str(data),
        "manifest": inputs.test.manifest,
        "n": len(ds),
        "limit": inputs.settings.limit,
        "image_size": inputs.size,
        "classes": inputs.classes,
        "synthetic": bool(ds.synthetic),
        "paths": list(ds.paths),
        "labels": inputs.labels.tolist(),
    }


def _attack_record(inputs: Inputs) -> dict:
    """explain.json's "attack" block: the white-box attack run on each model."""
    tm = inputs.spec.threat_model()
    return {
        "spec": str(inputs.spec),
        "threat_model": {"norm": tm.norm, "eps": tm.eps},
        "precision": inputs.runtime.precision,
        "seed": inputs.settings.seed,
        "run_on": "each model itself (white-box), every step (no early stop unless the spec says so)",
    }


def _cam_record(settings: ExplainSettings, per_model: dict[str, dict]) -> dict:
    """explain.json's "cam" block: how the maps were made and what each number means."""
    return {
        "method": settings.method,
        "package": "grad-cam (pytorch_grad_cam) " + METHODS[settings.method].__name__,
        "target": settings.target,
        "target_meaning": (
            "each map explains the class the model predicts for that very image (clean or adversarial)"
            if settings.target == "predicted"
            else "both maps explain the true class"
        ),
        "precision": "fp32 (autocast off): bf16 gradients quantize the channel weights coarsely",
        "layers": {label: per_model[label]["target_layer"] for label in per_model},
        "grid": settings.grid,
        "top_fraction": settings.top_fraction,
        "rank_correlation": "Spearman rho (scipy.stats.spearmanr) over the cells of both maps, "
        f"area-averaged to at most {settings.grid}x{settings.grid}",
        "top_overlap": f"share of the clean map's top {100 * settings.top_fraction:g}% cells (ties at "
        "the threshold included) that are also top cells of the adversarial map; IoU = o / (2 - o)",
        "interval": f"95% percentile bootstrap over images, {settings.n_boot} resamples, "
        f"seed {settings.seed}",
        "outcomes": "fooled: right on clean, wrong under attack; resisted: right on both; "
        "clean_error: wrong on the clean image",
        "paired_difference": "adversarial model minus normal model per test image, bootstrap over images",
    }
