"""Transfer across architectures (the study's first future-scope item).

A surrogate of another architecture is trained normally on the targets' own training split, PGD
is run on the surrogate, and its adversarial images are scored on each target beside the
white-box accuracy of the same attack on the same images. The logic follows
`fortify.evaluation.evaluate_transfer`, which does this between two checkpoints of the same
shape; it is not called here because it would re-run the white-box attack on every target
(the explain stage already holds those images) and needs a finished surrogate checkpoint.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import torch

from fortify.attacks import AttackSpec
from fortify.errors import ConfigError
from fortify.evaluation import sanity
from fortify.evaluation.batches import attack_dataset, predict
from fortify.intervals import interval_or_none
from fortify.progress import Advance
from fortify.runtime import Runtime, seed_everything
from fortify.training import TrainConfig, train
from fortify.training.config import config_differences
from fortify.training.run_folder import read_run_config


def train_surrogate(
    arch: str,
    *,
    data: str | Path,
    manifest: str | Path | None,
    image_size: int,
    run_dir: Path,
    epochs: int,
    lr: float,
    batch_size: int,
    limit_per_class: int | None,
    seed: int,
    runtime: Runtime,
    progress: bool,
    cache_dir: str | Path | None = None,
) -> tuple[Path, dict]:
    """Standard training of `arch` into run_dir (reused when it already holds this exact run)."""
    cfg = TrainConfig(
        data=str(data),
        split=str(manifest) if manifest is not None else None,  # None: train makes the default split
        model=arch,
        mode="standard",
        epochs=epochs,
        image_size=image_size,
        batch_size=batch_size,
        lr=lr,
        optimizer="adamw",  # converges in a few epochs without tuning, as in the quick profile
        seed=seed,
        out=str(run_dir),
        device=str(runtime.device),
        precision=runtime.precision,
        # Standard training keeps its running statistics current; recalibrating would cost a pass.
        bn_recalibrate=False,
        limit_per_class=limit_per_class,
        cache_dir=str(cache_dir) if cache_dir is not None else None,
    )
    try:
        old = read_run_config(run_dir)
    except ConfigError:
        old = None
        stale = True
    else:
        stale = old is not None and bool(config_differences(old, cfg))
    reused = old is not None and not stale and (run_dir / "last.json").is_file()
    started = time.perf_counter()
    summary = train(cfg, resume=not stale, force=stale, progress=progress)
    return run_dir / "best.safetensors", {
        "arch": arch,
        "run_dir": str(run_dir),
        "checkpoint": str(run_dir / "best.safetensors"),
        "train_config": cfg.to_dict(),
        "epochs": epochs,
        "best_epoch": summary["best_epoch"],
        "val_clean_accuracy": (summary.get("best") or {}).get("val_clean_acc"),
        "reused": reused,
        "train_seconds": time.perf_counter() - started,
    }


def _acc(pred: torch.Tensor, y: torch.Tensor) -> dict:
    k, n = int((pred == y).sum()), len(y)
    return {"accuracy": k / n if n else None, "accuracy_ci": interval_or_none(k, n), "correct": k, "n": n}


def transfer_to_targets(
    surrogate: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    spec: AttackSpec,
    targets: dict[str, tuple[torch.nn.Module, torch.Tensor]],  # label -> (model, its white-box x_adv)
    runtime: Runtime,
    batch_size: int,
    seed: int,
    advance: Advance | None = None,
) -> dict:
    """Craft `spec` on the surrogate once; score it on every target beside that target's white-box run."""
    fp32 = replace(runtime, precision="fp32")  # scores in fp32 whatever the attacks ran in
    t0 = time.perf_counter()
    seed_everything(seed)
    x_src = attack_dataset(spec, surrogate, x, y, runtime, batch_size, advance)
    craft_seconds = time.perf_counter() - t0
    clean_pred, _ = predict(surrogate, x, fp32, batch_size)
    own_pred, _ = predict(surrogate, x_src, fp32, batch_size)
    out = {
        "craft_attack": str(spec),
        "craft_seconds": craft_seconds,
        "surrogate_clean": _acc(clean_pred, y),
        "surrogate_on_own_adversarial": _acc(own_pred, y),
        "targets": {},
    }
    for label, (model, x_wb) in targets.items():
        transfer = _acc(predict(model, x_src, fp32, batch_size)[0], y)
        white_box = _acc(predict(model, x_wb, fp32, batch_size)[0], y)
        out["targets"][label] = {
            "transfer": transfer,
            "white_box": white_box,
            "clean": _acc(predict(model, x, fp32, batch_size)[0], y),
            # How different the transferred images are from the white-box ones on the same scans.
            "mean_abs_difference_to_white_box": float((x_src - x_wb).abs().mean()),
            "sanity": sanity.white_box_no_weaker_than_transfer(
                white_box["accuracy"], transfer["accuracy"], "surrogate", str(spec), [spec.name]
            ),
        }
    out["x_src"] = x_src  # popped by the caller (tests look at it); never written to JSON
    return out
