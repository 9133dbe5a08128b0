"""`fortify audit` says what loading did to the files, and prints no empty scans table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console

from fortify.cli.audit_command import _scan_table


def _mixed_inputs(root: Path) -> Path:
    """64x96 colour images in TIFF, PNG (with alpha) and BMP (as tests/data/test_audit.py makes them)."""
    rng = np.random.default_rng(0)
    for c in ("benign", "malignant", "normal"):
        (root / c).mkdir(parents=True)
        for i, name in enumerate("abcdef"):
            im = Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8), "RGB")
            suffix = (".tif", ".png", ".bmp")[i % 3]
            (im.convert("RGBA") if suffix == ".png" else im).save(root / c / f"img{name}{suffix}")
    return root


def test_audit_prints_formats_conversions_and_upscaling(cli, tmp_path, capsys):
    assert cli(["audit", str(_mixed_inputs(tmp_path / "d"))]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert "formats: .tif 6, .png 6, .bmp 6" in out
    assert "converted to 8-bit gray: RGB 12, RGBA 6" in out
    assert "upscaled: 18 image(s) smaller than 128 px (smallest 96x64)" in out


def test_scans_without_runs_is_a_line_not_an_empty_table(capsys):
    scans = {"applied": "scan", "scan": {"threshold": 3.0}, "calibration": None}
    scans |= {"groups": 5, "largest_group": 1}
    _scan_table(scans, ["benign", "normal"], Console(width=200))
    out = capsys.readouterr().out
    assert "no scans reconstructed (file names carry no numbers)" in out and "link threshold" not in out
