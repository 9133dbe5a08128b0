"""DICOM slices: stored pixels -> Hounsfield units -> a display window -> 8-bit grayscale.

Needs the optional `pydicom` package (`pip install 'fortify[dicom]'`), imported only when a DICOM file is
decoded. Steps, per file: RescaleSlope/RescaleIntercept turn stored values into Hounsfield units (slope 1,
intercept 0 when absent); the window maps [level - width/2, level + width/2] linearly onto 0..255
(clipped, rounded half up); MONOCHROME1 (bright = low value) is inverted after windowing, as a viewer
does. The result enters the same center-crop + resize path as a PNG or JPEG. Colour DICOMs are converted
to grayscale without a window. Multi-frame files (a whole volume in one file) are not supported: they
count as unreadable with a one-line reason (export one file per slice). A compressed transfer syntax
whose decoder is not installed stops the load with a one-line error naming the package to install.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np

from fortify.data.decode import DecodedImage, UnreadableImage, pixel_hash, preprocess_gray
from fortify.errors import ConfigError

DICOM_EXTENSIONS = frozenset({".dcm", ".dicom"})
# Standard CT presets (width, level) in Hounsfield units.
WINDOWS = {"lung": (1500.0, -600.0), "mediastinum": (350.0, 50.0)}
DEFAULT_WINDOW = "lung"
# Tags the audit reports and the split groups by (PatientID, else StudyInstanceUID, else SeriesInstanceUID).
TAGS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "Modality", "SliceThickness")
GROUP_TAGS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID")
_FALLBACK_DECODERS = "pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg (or python-gdcm)"
# pydicom names plugin requirements by import name; pip knows gdcm as python-gdcm.
_PIP_NAMES = {"gdcm": "python-gdcm"}


class DicomDecoderMissing(Exception):
    """The file is fine but this installation cannot decode it (pydicom or a codec plugin is missing)."""


@dataclass(frozen=True)
class Window:
    width: float
    level: float
    name: str  # canonical spec, accepted by parse_window: "lung", "mediastinum" or "W,L"

    @property
    def tag(self) -> str:
        """For cache file names: decoded pixels depend on the window."""
        return f"w{self.width:g}_{self.level:g}"

    def describe(self) -> str:
        preset = f"{self.name} " if self.name in WINDOWS else ""
        return f"{preset}window W{self.width:g} L{self.level:g} HU"


def parse_window(spec: str | Window) -> Window:
    """'lung' | 'mediastinum' | 'WIDTH,LEVEL' (Hounsfield units, width > 0) -> Window."""
    if isinstance(spec, Window):
        return spec
    text = str(spec).strip().lower()
    if text in WINDOWS:
        return Window(*WINDOWS[text], name=text)
    parts = text.split(",")
    try:
        width, level = (float(p) for p in parts) if len(parts) == 2 else (0.0, 0.0)
    except ValueError:
        width, level = 0.0, 0.0
    if width > 0 and np.isfinite(width) and np.isfinite(level):
        return Window(width, level, name=f"{width:g},{level:g}")
    raise ConfigError(
        f"unknown window {spec!r}; use lung (W1500 L-600), mediastinum (W350 L50) or WIDTH,LEVEL in "
        "Hounsfield units (e.g. 400,40)"
    )


def is_dicom(path: str) -> bool:
    return PurePosixPath(path).suffix.lower() in DICOM_EXTENSIONS


def apply_window(hu: np.ndarray, window: Window) -> np.ndarray:
    """Linear window to uint8: level - width/2 -> 0, level + width/2 -> 255, rounded half up."""
    low = window.level - window.width / 2
    scaled = np.clip((np.asarray(hu, dtype=np.float64) - low) / window.width, 0.0, 1.0) * 255.0
    return np.floor(scaled + 0.5).astype(np.uint8)


def _pydicom():
    try:
        import pydicom
    except ImportError as e:
        raise DicomDecoderMissing("DICOM files need pydicom: pip install 'fortify[dicom]'") from e
    return pydicom


def _decoder_hint(message: str) -> str:
    """pip names from pydicom's 'all plugins are missing dependencies' message ('\\tgdcm - requires
    gdcm>=3.0.10', '\\tpylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-libjpeg>=2.1'), pylibjpeg first."""
    options = []
    for reqs in re.findall(r"- requires (.+)", message):
        names = [re.split(r"[<>=!~ ]", r.strip())[0] for r in reqs.split(" and ")]
        pkgs = [_PIP_NAMES.get(n, n) for n in names if n and n not in ("numpy", "pillow")]
        if pkgs:
            options.append(" ".join(pkgs))
    options.sort(key=lambda o: not o.startswith("pylibjpeg"))
    if not options:
        return _FALLBACK_DECODERS
    return options[0] + (f" (or {', or '.join(options[1:])})" if len(options) > 1 else "")


def _pixel_error(ds, error: Exception) -> Exception:
    """A codec this installation lacks -> DicomDecoderMissing naming the package; else UnreadableImage."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    message = str(error).strip()
    first = message.splitlines()[0] if message else type(error).__name__
    if syntax is not None and syntax.is_compressed:
        name = getattr(syntax, "name", str(syntax))
        # pydicom 3: "... all plugins are missing dependencies: ... - requires X"; 2.x: "... missing
        # required dependencies" or "there are no pixel data handlers available that support it".
        if re.search(r"missing (required )?dependencies|no pixel data handlers available", message):
            return DicomDecoderMissing(
                f"DICOM pixel data is compressed as {name!r} and no decoder for it is installed: "
                f"pip install {_decoder_hint(message)}"
            )
        if "does not support" in message:  # a plugin is installed but cannot do this variant
            why = next(line.strip() for line in message.splitlines() if "does not support" in line)
            return DicomDecoderMissing(
                f"DICOM pixel data compressed as {name!r} cannot be decoded by the installed plugins "
                f"({why}); pip install {_FALLBACK_DECODERS}"
            )
    return UnreadableImage(f"cannot decode DICOM pixel data: {first}")


def _tags(ds) -> dict[str, str]:
    out = {}
    for key in TAGS:
        value = ds.get(key)
        text = str(value).strip() if value is not None else ""
        if not text:
            continue
        if key == "SliceThickness":
            try:
                text = f"{float(text):g}"
            except ValueError:
                pass
        out[key] = text
    return out


def hounsfield(ds, stored: np.ndarray) -> np.ndarray:
    """Stored values -> Hounsfield units (float64) by RescaleSlope/RescaleIntercept (1 and 0 if absent)."""
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    return stored.astype(np.float64) * slope + intercept


def decode_dicom(data: bytes, image_size: int, window: Window) -> tuple[DecodedImage, dict[str, str]]:
    """Decode one DICOM file; also return its identifying tags (only those present).

    Raises UnreadableImage (one-line reason) for a broken or unsupported file, DicomDecoderMissing when
    pydicom or the codec for its transfer syntax is not installed."""
    pydicom = _pydicom()
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as e:  # pydicom raises many types on malformed input; all mean "unreadable"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnreadableImage(f"not a readable DICOM file: {first}") from e
    if "PixelData" not in ds:
        raise UnreadableImage("DICOM file holds no image (no PixelData)")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise UnreadableImage(
            f"multi-frame DICOM ({frames} frames) is not supported; export one file per slice"
        )
    try:
        arr = ds.pixel_array
    except Exception as e:  # RuntimeError / ValueError / NotImplementedError from pydicom's plugins
        raise _pixel_error(ds, e) from e
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    bits = int(ds.get("BitsStored", arr.dtype.itemsize * 8))
    mode, note = f"DICOM {photometric} {bits}-bit", None
    tags = _tags(ds)
    if photometric in ("MONOCHROME1", "MONOCHROME2") and arr.ndim == 2:
        hu = hounsfield(ds, arr)
        gray = apply_window(hu, window)
        if photometric == "MONOCHROME1":
            gray = 255 - gray
        # Hash the Hounsfield units, not the windowed pixels: duplicates do not depend on the window.
        sha = pixel_hash(hu.astype(np.float32))
        modality = tags.get("Modality", "CT")
        if modality != "CT":
            note = f"{modality} DICOM windowed as CT Hounsfield units ({window.describe()})"
    elif arr.ndim == 3 and arr.shape[-1] == 3 and arr.dtype == np.uint8:
        # pydicom returns RGB (YBR converted); same luminance weights as Pillow's "L" conversion.
        gray = np.rint(arr @ np.array([0.299, 0.587, 0.114])).clip(0, 255).astype(np.uint8)
        sha = pixel_hash(gray)
        note = f"colour DICOM converted to grayscale without a window ({photometric})"
    else:
        raise UnreadableImage(f"unsupported DICOM image: {photometric} with shape {tuple(arr.shape)}")
    height, width = gray.shape
    if width < 1 or height < 1:
        raise UnreadableImage("image has no pixels")
    pixels, fingerprint = preprocess_gray(np.ascontiguousarray(gray), image_size)
    return DecodedImage(pixels, fingerprint, sha, width, height, mode, note), tags


def group_key(tags: dict[str, str] | None) -> str | None:
    """What keeps a file's images together in a split: its patient, else study, else series; None
    without any of those tags."""
    for key in GROUP_TAGS:
        if tags and tags.get(key):
            return f"{key}={tags[key]}"
    return None
