"""`run_detect`: the detection stage for the normal (and adversarially trained) checkpoint.

Per model: fit on TRAIN (Gaussians, head), threshold on VAL, evaluate on TEST against FGSM, PGD,
CW and the adaptive attack; write out_dir/detect.json and out_dir/figures/detect_*.png.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from pathlib import Path

import torch

from fortify import __version__
from fortify.data import load_split, make_split
from fortify.detect.batches import Start
from fortify.detect.fit import fit_detector
from fortify.detect.scoring import score_detector
from fortify.detect.settings import DetectSettings
from fortify.detect.work import DetectWork, UnitsPlace
from fortify.distributed import init_distributed
from fortify.errors import DataError
from fortify.evaluation.loading import check_checkpoint_path, open_checkpoint, open_test_set
from fortify.fileio import write_json
from fortify.progress import tasks as progress_tasks
from fortify.report.figures.detect import detect_figures
from fortify.runtime import Runtime, seed_everything

DETECT_FORMAT = "fortify-detect/1"
METHOD = {
    "detector": "Mahalanobis (Lee et al. 2018): per-layer class-conditional Gaussians with a tied, shrunk "
    "covariance on clean TRAIN features, score = min over classes of the Mahalanobis distance, "
    "logistic regression on the per-layer distances fitted on TRAIN clean vs TRAIN adversarial "
    "(out-of-fold distances)",
    "threshold": "detector logit flagging the target FPR of clean VALIDATION images; no test image is used",
    "counting": "adversarial examples count only where they fool the classifier (clean correct, adversarial "
    "wrong); clean side: every clean test image",
    "intervals": "AUROC: percentile bootstrap (clean, adversarial resampled separately); rates: Wilson 95%",
    "adaptive": "L-inf PGD on the joint objective, attacker knows the detector and its threshold "
    "(Carlini & Wagner 2017; Tramer et al. 2020); success = fooled and not flagged",
    "precision": "predictions and detector scores in fp32; attacks in the runtime's precision",
}


def detect_on_splits(
    model: torch.nn.Module,
    model_name: str | None,
    train: tuple[torch.Tensor, torch.Tensor],
    val_x: torch.Tensor,
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    num_classes: int,
    image_size: int,
    in_channels: int = 1,
    settings: DetectSettings,
    runtime: Runtime,
    start: Start | None = None,
    work: DetectWork | None = None,
) -> dict:
    """Fit on train/val, score on test. The test images reach only `score_detector`. `work`: where the
    attacks run (units kept on disk, torchrun's processes; detect.work); default: here, kept nowhere."""
    start = start or (lambda _d, _n: lambda _k: None)
    work = work or DetectWork(None, {}, settings.unit_size)
    seed_everything(settings.seed)
    fitted = fit_detector(
        model,
        model_name,
        train,
        val_x,
        num_classes=num_classes,
        settings=settings,
        runtime=runtime,
        start=start,
        work=work,
    )
    result = score_detector(
        fitted.detector,
        *test,
        image_size=image_size,
        in_channels=in_channels,
        settings=settings,
        runtime=runtime,
        start=start,
        work=work,
    )
    return {"detector": fitted.info, **result, "units": work.record()}


def detect_checkpoint(
    checkpoint: str | Path,
    *,
    data: str | Path,
    split: str | Path | None,
    settings: DetectSettings,
    runtime: Runtime,
    start: Start | None = None,
    progress: bool = False,
    cache_dir: str | Path | None = None,
    units: UnitsPlace | None = None,
) -> dict:
    """One checkpoint's detector, fitted and scored; its attacks' units under `units` (if given)."""
    t0 = time.perf_counter()
    model, info = open_checkpoint(checkpoint, device="cpu")
    model = runtime.prepare_model(model).eval()
    test = open_test_set(
        data, info, checkpoint, split=split, limit=settings.test_limit, progress=progress, cache_dir=cache_dir
    )
    size = int(info["image_size"])
    manifest = test.manifest or make_split(
        data, seed=test.split_seed or 0, image_size=size, cache_dir=cache_dir
    )
    parts = load_split(manifest, data, image_size=size, progress=progress, cache_dir=cache_dir)
    train, val = parts["train"], parts["val"]
    if len(val) == 0:
        raise DataError("the split has no validation images: the detector's threshold is set on them")
    loading = time.perf_counter() - t0
    work = units.work(checkpoint, info, settings, runtime) if units else None
    entry = detect_on_splits(
        model,
        info.get("model"),
        train.tensors(),
        val.tensors()[0],
        test.dataset.tensors(),
        num_classes=int(info["num_classes"]),
        image_size=size,
        in_channels=int(info.get("in_channels", 1)),
        settings=settings,
        runtime=runtime,
        start=start,
        work=work,
    )
    entry["detector"]["seconds"]["loading"] = loading
    return {
        "checkpoint": {
            "path": str(checkpoint),
            "sha256": info.get("weights_sha256"),
            "model": info.get("model"),
            "mode": info.get("mode"),
            "train_eps": info.get("eps"),
        },
        "data": {
            "root": test.dataset.root,
            "manifest": test.manifest,
            "split_seed": test.split_seed,
            "n_train": len(train),
            "n_val": len(val),
            "n_test": len(test.dataset),
            "test_limit": settings.test_limit,
            "classes": list(test.dataset.classes),
            "image_size": size,
            "synthetic": bool(test.dataset.synthetic),
        },
        **entry,
        "seconds": time.perf_counter() - t0,
    }


def _labelled(start: Start, model: str) -> Start:
    """Progress lines name the model they are about (reproduce detects on two)."""
    return lambda description, total: start(f"{model}: {description}", total)


def run_detect(
    normal_checkpoint: str | Path,
    adversarial_checkpoint: str | Path | None = None,
    *,
    data: str | Path,
    split: str | Path | None = None,
    out_dir: str | Path,
    settings: DetectSettings | dict | None = None,
    runtime: Runtime | None = None,
    progress: bool = False,
    cache_dir: str | Path | None = None,
    resume: bool = False,
) -> dict | None:
    """Detector for the normal model (and the adversarial one when settings.models == "both" and it
    is given); writes out_dir/detect.json atomically at the end and the figures; returns the dict.

    The attacks run in work units (detect.work) kept under out_dir/units/<model>/; `resume` reuses the
    finished ones (and refuses units of another configuration). Under torchrun every process computes
    its share of the units and only rank 0 writes and returns the results (the others return None)."""
    started = time.perf_counter()
    if isinstance(settings, DetectSettings):
        settings = settings.validate()
    else:
        settings = DetectSettings.from_dict(settings)
    check_checkpoint_path(normal_checkpoint)
    todo = [("normal", normal_checkpoint)]
    skipped = None
    if settings.models == "both":
        if adversarial_checkpoint is None:
            skipped = "no adversarial checkpoint given"
        else:
            check_checkpoint_path(adversarial_checkpoint)
            todo.append(("adversarial", adversarial_checkpoint))
    elif adversarial_checkpoint is not None:
        skipped = "settings.models is 'normal'"
    runtime = runtime or Runtime.resolve()
    dist = init_distributed(runtime.device.type)
    out = Path(out_dir)

    models = {}
    with progress_tasks(progress and dist.is_main) as start:
        for name, ckpt in todo:
            models[name] = detect_checkpoint(
                ckpt,
                data=data,
                split=split,
                settings=settings,
                runtime=runtime,
                start=_labelled(start, name),
                progress=progress,
                cache_dir=cache_dir,
                units=UnitsPlace(out / "units" / name, resume, dist),
            )
    if not dist.is_main:
        return None
    _say_reused(models, out, progress)
    payload = {
        "format": DETECT_FORMAT,
        "fortify_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "settings": settings.to_dict(),
        "seed": settings.seed,
        "runtime": {**runtime.describe(), "threads": torch.get_num_threads()},
        "method": METHOD,
        "adversarial_skipped": skipped,
        "models": models,
    }
    payload["figures"] = detect_figures(payload, out / "figures")
    payload["seconds_total"] = time.perf_counter() - started
    write_json(out / "detect.json", payload)
    return payload


def _say_reused(models: dict[str, dict], out: Path, progress: bool) -> None:
    """The log line a resumed run owes: how many finished units it reused."""
    reused = sum(m["units"]["reused"] for m in models.values())
    if progress and reused:
        count = sum(m["units"]["count"] for m in models.values())
        print(f"reused {reused} of {count} units from {out / 'units'}", file=sys.stderr)
