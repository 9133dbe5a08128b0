"""Tiny on-disk class-folder datasets built with PIL in tmp_path (fast, no real data)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def random_gray(rng: np.random.Generator, h: int = 24, w: int = 24) -> np.ndarray:
    return rng.integers(0, 256, size=(h, w), dtype=np.uint8)


def write_image(path: Path, pixels: np.ndarray, mode: str = "L", fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode if mode != "L" else None).save(path, format=fmt)
    return path


@pytest.fixture
def make_folder(tmp_path: Path) -> Callable[..., Path]:
    """make_folder({"Bengin cases": 4, "Normal cases": 4}) -> root with random PNG images per class.

    PNG keeps pixels exact, so tests can reason about duplicates. Image i of class c is seeded by
    (c, i), so it is different from every other image.
    """

    def make(spec: dict[str, int], root_name: str = "ds", size: tuple[int, int] = (24, 24)) -> Path:
        root = tmp_path / root_name
        for c, (folder, n) in enumerate(spec.items()):
            (root / folder).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                rng = np.random.default_rng([c, i, 7])
                write_image(root / folder / f"img ({i + 1}).png", random_gray(rng, size[1], size[0]))
        return root

    return make


@pytest.fixture
def img() -> object:
    """The helpers above, for tests (test modules cannot import conftest reliably)."""

    class _Helpers:
        random_gray = staticmethod(random_gray)
        write_image = staticmethod(write_image)

    return _Helpers()
