"""The explorer's thumbnails: 8-bit grayscale PNGs at the model's resolution, one file per picture.

Per image: `<row>.c.png` (clean); per model m: `<row>.<m>.a.png` (worst-case adversarial) and
`<row>.<m>.p.png` (the perturbation, adversarial minus clean, amplified: gray = unchanged, and
`scale` maps a change of 0.5/scale, the L-inf budget, to black or white); when explain ran,
`<row>.<m>.cc.png` and `<row>.<m>.ca.png`: its class-activation maps of the clean and of its attacked
image, in a heat colour map blended over the clean image (RGB).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

COMPRESS = 6  # zlib level: near the smallest files at a fraction of level 9's time


def perturbation_scale(eps: float | None, clean: np.ndarray, adv: np.ndarray) -> float:
    """0.5 / eps (the budget's change reaches black or white); without an L-inf budget, 0.5 over the
    largest change of any image (at least 1)."""
    if eps:
        return 0.5 / eps
    largest = float(np.abs(adv.astype(np.int16) - clean.astype(np.int16)).max()) / 255 if adv.size else 0
    return max(1.0, 0.5 / largest) if largest else 1.0


def _png(pixels: np.ndarray, path: Path) -> None:
    Image.fromarray(pixels, mode="L").save(path, format="PNG", compress_level=COMPRESS)


def clean_thumb(folder: Path, row: int, clean: np.ndarray) -> None:
    """`clean`: (1, H, W) or (H, W) uint8."""
    _png(np.ascontiguousarray(clean.reshape(clean.shape[-2:])), folder / f"{row}.c.png")


def model_thumbs(
    folder: Path, row: int, model: str, clean: np.ndarray, adv: np.ndarray, scale: float
) -> None:
    """The adversarial image and its amplified perturbation under `model`."""
    c = clean.reshape(clean.shape[-2:]).astype(np.float32)
    a = adv.reshape(adv.shape[-2:])
    _png(np.ascontiguousarray(a), folder / f"{row}.{model}.a.png")
    amplified = np.clip(127.5 + scale * (a.astype(np.float32) - c), 0, 255).round().astype(np.uint8)
    _png(amplified, folder / f"{row}.{model}.p.png")


CAM_BLEND = 0.5  # share of the heat colour over the gray scan


def cam_thumbs(folder: Path, row: int, model: str, clean: np.ndarray, maps: tuple) -> None:
    """The two maps (uint8 H x W, [0,255] = [0,1]) blended over the clean image."""
    from matplotlib import colormaps

    gray = clean.reshape(clean.shape[-2:]).astype(np.float32)[..., None]
    for kind, cam in zip(("cc", "ca"), maps, strict=True):
        heat = colormaps["jet"](np.asarray(cam, dtype=np.float32) / 255)[..., :3] * 255
        rgb = (1 - CAM_BLEND) * gray + CAM_BLEND * heat
        Image.fromarray(np.clip(rgb, 0, 255).round().astype(np.uint8), mode="RGB").save(
            folder / f"{row}.{model}.{kind}.png", format="PNG", compress_level=COMPRESS
        )
