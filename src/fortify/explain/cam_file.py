"""explain/cams.safetensors: every explained image's class-activation maps, kept for the per-image
explorer (fortify.report.explorer), which draws them and recomputes nothing.

Per model label L: `clean.L` and `adv.L`, (N, H, W) uint8 (the maps in [0,1] times 255, rounded), in
the order of explain.json's data.paths; the metadata holds those paths. N * H * W bytes per map.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from fortify.fileio import atomic_write

FILE = "cams.safetensors"


def _uint8(maps: np.ndarray) -> torch.Tensor:
    scaled = np.rint(np.asarray(maps, dtype=np.float32) * 255)
    return torch.from_numpy(np.clip(scaled, 0, 255).astype(np.uint8))


def write_cams(path: str | Path, paths: list[str], held: dict) -> Path:
    """`held[label]` has `cam_clean` and `cam_adv` (N x H x W in [0,1]), as explain_model returns it."""
    from safetensors.torch import save_file

    tensors = {}
    for label, h in held.items():
        tensors[f"clean.{label}"] = _uint8(h.cam_clean).contiguous()
        tensors[f"adv.{label}"] = _uint8(h.cam_adv).contiguous()
    meta = {"format": "fortify-cams/1", "paths": json.dumps(list(paths))}
    return atomic_write(path, lambda p: save_file(tensors, str(p), metadata=meta))
