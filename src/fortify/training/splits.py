"""A run's training and validation images, and how they are cut into batches.

The split manifest is RUN_DIR/split.json (made by rank 0 on the first run, read by every rank) unless
cfg.split names one; the images come as whole tensors, so an epoch's batches are index tensors into them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from fortify import data as data_api
from fortify import distributed as ddp
from fortify.errors import ConfigError
from fortify.training.config import TrainConfig


@dataclass
class Splits:
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    classes: list[str]
    manifest: Path
    synthetic: bool
    root: str | None


def load_splits(cfg: TrainConfig, run_dir: Path, info: ddp.DistInfo, progress: bool) -> Splits:
    """The train and val images of cfg.split (a manifest path, "given", or None: a fresh split)."""
    given = cfg.split == "given"  # the dataset's own train/val/test folders, made into RUN_DIR/split.json
    if cfg.split is not None and not given:
        manifest = Path(cfg.split)
        if not manifest.is_file():
            raise ConfigError(f"split manifest not found: {manifest}")
    else:
        manifest = run_dir / "split.json"
        if info.is_main and not manifest.is_file():
            split = data_api.make_split(
                cfg.data,
                image_size=cfg.image_size,
                cache_dir=cfg.cache_dir,
                progress=progress,
                **({"grouping": "given"} if given else {}),
            )
            data_api.save_manifest(split, manifest)
        ddp.barrier(info)
    splits = data_api.load_split(
        manifest,
        cfg.data,
        image_size=cfg.image_size,
        limit_per_class=cfg.limit_per_class,
        cache_dir=cfg.cache_dir,
        progress=progress and info.is_main,
    )
    train, val = splits["train"], splits["val"]
    if len(train) < 2 or len(val) < 1:
        raise ConfigError(f"split {manifest} leaves {len(train)} training and {len(val)} validation images")
    tx, ty = train.tensors()
    vx, vy = val.tensors()
    return Splits(tx, ty, vx, vy, list(train.classes), manifest, bool(train.synthetic), train.root)


def class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Inverse class frequency (cfg.class_balanced's loss weights); 1 for a class absent from `labels`."""
    counts = torch.bincount(labels, minlength=num_classes).float()
    weights = labels.numel() / (num_classes * counts.clamp(min=1))
    return torch.where(counts > 0, weights, torch.ones_like(weights))


def even_batches(indices: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Near-equal batches (sizes differ by <= 1): no sample dropped, no 1-sample batch for batch norm."""
    n_batches = max(1, math.ceil(indices.numel() / batch_size))
    return [b for b in torch.tensor_split(indices, n_batches) if b.numel() > 0]
