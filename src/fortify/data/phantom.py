"""A procedural, CT-like 3-class dataset ("phantom") for tests and for trying fortify without data.

Each slice: dark air, a soft-tissue body ellipse, two dark lungs, a bright spine, thin vessels in
the lungs and noise. benign = one small smooth round nodule; malignant = one larger irregular mass
with spicules; normal = no lesion. Everything is drawn from a per-image RNG seeded by
(PHANTOM_SEED, class, index), so the dataset is identical on every machine. It is synthetic and
`ImageDataset.synthetic` is True; anything that reports on it must say so.
"""

from __future__ import annotations

import functools
import hashlib
import re

import numpy as np

from fortify.errors import DataError

PHANTOM_CLASSES = ["benign", "malignant", "normal"]
PHANTOM_SEED = 20240601
PHANTOM_SIZE = 128  # master resolution; load_dataset resizes like any real image
DEFAULT_PER_CLASS = 100
MAX_PER_CLASS = 5000


def parse_phantom_spec(data: str) -> int | None:
    """Return images per class for "phantom" / "phantom:n=40", None when `data` is not a phantom spec."""
    text = data.strip()
    if text == "phantom":
        return DEFAULT_PER_CLASS
    if not text.startswith("phantom:"):
        return None
    m = re.fullmatch(r"phantom:n=(\d+)", text)
    if not m:
        raise DataError(f"bad phantom spec {data!r}; use 'phantom' or 'phantom:n=<images per class>'")
    n = int(m.group(1))
    if not 1 <= n <= MAX_PER_CLASS:
        raise DataError(f"phantom n must be between 1 and {MAX_PER_CLASS}, got {n}")
    return n


def _ellipse(yy, xx, cy, cx, ry, rx, angle=0.0) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    dy, dx = yy - cy, xx - cx
    u, v = dx * c + dy * s, -dx * s + dy * c
    return (u / rx) ** 2 + (v / ry) ** 2  # <= 1 inside


def _segment_distance(yy, xx, p0, p1) -> np.ndarray:
    (y0, x0), (y1, x1) = p0, p1
    vy, vx = y1 - y0, x1 - x0
    t = np.clip(((yy - y0) * vy + (xx - x0) * vx) / max(vy * vy + vx * vx, 1e-12), 0.0, 1.0)
    return np.hypot(yy - (y0 + t * vy), xx - (x0 + t * vx))


def _point_in_lung(rng, lung) -> tuple[float, float]:
    cy, cx, ry, rx = lung
    r, a = 0.55 * np.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
    return cy + r * ry * np.sin(a), cx + r * rx * np.cos(a)


@functools.lru_cache(maxsize=30000)  # tests load the phantom many times; ~6 ms per slice otherwise
def phantom_slice(label: int, index: int, size: int = PHANTOM_SIZE) -> np.ndarray:
    """One uint8 (size, size) slice of class PHANTOM_CLASSES[label] (read-only: it is cached)."""
    rng = np.random.default_rng([PHANTOM_SEED, label, index])
    lin = (np.arange(size) + 0.5) / size * 2 - 1
    yy, xx = np.meshgrid(lin, lin, indexing="ij")
    img = np.zeros((size, size))

    by, bx = 0.05 + rng.normal(0, 0.02), rng.normal(0, 0.02)
    body = _ellipse(yy, xx, by, bx, 0.62 + rng.normal(0, 0.03), 0.88 + rng.normal(0, 0.03)) <= 1
    img[body] = 0.55 + rng.normal(0, 0.03)
    lungs = []
    for side in (-1, 1):
        lung = (
            by - 0.05 + rng.normal(0, 0.02),
            bx + side * (0.4 + rng.normal(0, 0.02)),
            0.42 + rng.normal(0, 0.03),
            0.27 + rng.normal(0, 0.02),
        )
        mask = _ellipse(yy, xx, *lung, angle=side * rng.uniform(0.0, 0.2)) <= 1
        img[mask & body] = 0.12 + rng.normal(0, 0.02)
        lungs.append(lung)
    img[_ellipse(yy, xx, by + 0.45, bx, 0.09, 0.09) <= 1] = 0.92  # spine

    for lung in lungs:  # thin vessels: elongated, fainter than any lesion
        for _ in range(rng.integers(4, 9)):
            p0 = _point_in_lung(rng, lung)
            ang, length = rng.uniform(0, 2 * np.pi), rng.uniform(0.05, 0.18)
            p1 = (p0[0] + length * np.sin(ang), p0[1] + length * np.cos(ang))
            width = rng.uniform(0.008, 0.014)
            img = np.maximum(img, 0.42 * np.exp(-((_segment_distance(yy, xx, p0, p1) / width) ** 2)))

    name = PHANTOM_CLASSES[label]
    if name != "normal":
        cy, cx = _point_in_lung(rng, lungs[rng.integers(0, 2)])
        r = np.hypot(yy - cy, xx - cx)
        theta = np.arctan2(yy - cy, xx - cx)
        if name == "benign":  # small, smooth, round
            radius = rng.uniform(0.07, 0.10) * np.ones_like(theta)
        else:  # larger, lobulated, with spicules
            r0 = rng.uniform(0.13, 0.19)
            lobes = sum(
                rng.uniform(0.05, 0.15) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5)
            )
            spikes = np.zeros_like(theta)
            for a in rng.uniform(0, 2 * np.pi, size=rng.integers(6, 12)):
                d = np.angle(np.exp(1j * (theta - a)))
                spikes += rng.uniform(0.3, 0.7) * np.exp(-((d / 0.08) ** 2))
            radius = r0 * (1 + lobes + spikes)
        edge = 1 / (1 + np.exp((r - radius) / 0.008))
        img = np.maximum(img, (0.78 + rng.normal(0, 0.03)) * edge)

    img += rng.normal(0, 0.025, size=img.shape)
    out = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
    out.setflags(write=False)
    return out


def phantom_files(per_class: int) -> list[tuple[str, int, np.ndarray, str]]:
    """(path, label, pixels, sha256 of pixels) for every phantom slice."""
    out = []
    for label, name in enumerate(PHANTOM_CLASSES):
        for i in range(per_class):
            pix = phantom_slice(label, i)
            out.append((f"phantom/{name}/{i}", label, pix, hashlib.sha256(pix.tobytes()).hexdigest()))
    return out
