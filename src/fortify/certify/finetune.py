"""The model certify smooths: the start checkpoint fine-tuned with Gaussian noise (training mode 'noise'),
or the checkpoint as is, and the sentence the report uses to say which."""

from __future__ import annotations

import time
from pathlib import Path

from fortify.certify.settings import CertifySettings
from fortify.evaluation.loading import TestSet
from fortify.runtime import Runtime


def finetune_with_noise(
    start: Path,
    cache_dir: str | Path | None,
    info: dict,
    test: TestSet,
    data: str | Path,
    settings: CertifySettings,
    runtime: Runtime,
    out: Path,
    progress: bool,
    resume: bool,
) -> tuple[Path, dict]:
    """Fine-tune `start` into out/noise-model/ -> (its last checkpoint, certify.json's "finetune" block)."""
    from fortify.training import TrainConfig, train

    cfg = TrainConfig(
        data=str(data),
        split=test.manifest,  # the split the test images come from: never train on them
        model=str(info["model"]),
        mode="noise",
        noise_sigma=settings.sigma,
        epochs=settings.finetune_epochs,
        image_size=int(info["image_size"]),
        batch_size=settings.finetune_batch_size,
        lr=settings.finetune_lr,
        seed=settings.seed,
        out=str(out / "noise-model"),
        device=str(runtime.device),
        precision=runtime.precision,
        init=str(start),
        optimizer="adamw",
        # Recalibrating batch norm on CLEAN training images (the loop's default) would give statistics the
        # smoothed classifier never sees: it only ever runs the model on noisy images. Keep the running
        # statistics of the noisy training batches instead.
        bn_recalibrate=False,
        cache_dir=str(cache_dir) if cache_dir is not None else None,
        # Fine-tune on the training data the start checkpoint saw (smoke runs: k images per class).
        limit_per_class=(info.get("config") or {}).get("limit_per_class"),
    )
    t0 = time.perf_counter()
    summary = train(cfg, resume=resume, force=not resume, progress=progress)
    last = summary.get("last") or {}
    return out / "noise-model" / "last.safetensors", {
        "config": cfg.to_dict(),
        "run_dir": str(out / "noise-model"),
        "checkpoint": "last.safetensors",  # the model after K epochs, as Cohen et al. (not val-selected)
        "epochs": summary["epochs_completed"],
        "seconds": time.perf_counter() - t0,
        "train_noisy_acc": last.get("train_adv_acc"),
        "val_clean_acc": last.get("val_clean_acc"),
    }


def model_label(settings: CertifySettings, info: dict, finetune: dict | None) -> str:
    who = f"the {settings.start_from} checkpoint"
    if finetune is not None:
        return (
            f"{who} fine-tuned {finetune['epochs']} epoch(s) with Gaussian noise "
            f"sigma={settings.sigma:g} (training mode 'noise')"
        )
    cfg = info.get("config") or {}
    if info.get("mode") == "noise" and cfg.get("noise_sigma") == settings.sigma:
        return f"{who} as is (trained with Gaussian noise sigma={settings.sigma:g})"
    return (
        f"{who} as is, NOT trained with Gaussian noise at sigma={settings.sigma:g}: smoothing a model "
        "that never saw noisy inputs mostly abstains"
    )
