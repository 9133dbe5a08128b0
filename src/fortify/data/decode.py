"""Decode one image file and preprocess it deterministically.

Preprocessing: 8-bit grayscale -> center crop to a square -> resize to S x S (PIL bilinear, which
antialiases when shrinking). The crop matters here: IQ-OTH/NCCD mixes 512x512 slices with 623x512
and 801x512 ones that occur only in the malignant class; stretching them would let a model learn
the aspect ratio instead of the anatomy.
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image

# Near-duplicate fingerprint: the center-cropped image shrunk to FINGERPRINT_SIZE^2 (independent of
# the training image size, so near-duplicate groups and therefore splits do not depend on it).
FINGERPRINT_SIZE = 16


class UnreadableImage(Exception):
    """A file that cannot be decoded (corrupt, truncated, unsupported). Carries a one-line reason."""


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray  # uint8 (S, S)
    fingerprint: np.ndarray  # uint8 (FINGERPRINT_SIZE**2,)
    pixel_sha256: str
    width: int
    height: int
    mode: str
    note: str | None  # a conversion the user should hear about (colour -> gray, 16-bit -> 8-bit)


def _to_gray8(img: Image.Image) -> tuple[np.ndarray, str | None]:
    """Return uint8 grayscale pixels and a note when the conversion loses information."""
    mode = img.mode
    if mode == "L":
        return np.asarray(img, dtype=np.uint8), None
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16-bit / integer / float images: linear min-max rescale to 0..255. The scanner window is
        # unknown, so this is a guess worth a warning.
        arr = np.asarray(img).astype(np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = np.zeros_like(arr) if hi <= lo else (arr - lo) * (255.0 / (hi - lo))
        return np.rint(scaled).astype(np.uint8), f"{mode} image rescaled to 8-bit (min-max {lo:g}..{hi:g})"
    if mode in ("1", "LA", "La"):
        return np.asarray(img.convert("L"), dtype=np.uint8), None
    rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)  # RGB, RGBA, P, CMYK, YCbCr, ...
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
        return np.ascontiguousarray(rgb[..., 0]), None  # gray stored as RGB: lossless
    gray = np.asarray(Image.fromarray(rgb, "RGB").convert("L"), dtype=np.uint8)
    return gray, f"colour {mode} image converted to grayscale"


def _center_square(img: Image.Image) -> Image.Image:
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return img.crop((left, top, left + side, top + side))


def preprocess_gray(gray: np.ndarray, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Center-crop + resize already-grayscale pixels; also return the near-duplicate fingerprint."""
    square = _center_square(Image.fromarray(gray, "L"))
    out = square.resize((image_size, image_size), Image.Resampling.BILINEAR)
    fp = square.resize((FINGERPRINT_SIZE, FINGERPRINT_SIZE), Image.Resampling.BOX)
    return np.asarray(out, dtype=np.uint8), np.asarray(fp, dtype=np.uint8).reshape(-1)


def pixel_hash(gray: np.ndarray) -> str:
    h = hashlib.sha256(f"{gray.shape[0]}x{gray.shape[1]}:".encode())
    h.update(np.ascontiguousarray(gray).tobytes())
    return h.hexdigest()


def decode_image(data: bytes, image_size: int) -> DecodedImage:
    """Decode file bytes; raise UnreadableImage with a one-line reason on any decoding problem."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                img.load()  # forces a full decode: truncated JPEGs fail here, not later
                mode, (width, height) = img.mode, img.size
                gray, note = _to_gray8(img)
    except (
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        # Pillow names the stream it read ("cannot identify image file <_io.BytesIO object at 0x...>"):
        # an object repr means nothing to a user, so say what it was instead.
        reason = re.sub(r"<_io\.\w+ object at 0x[0-9a-f]+>", "(not an image format Pillow reads)", reason)
        raise UnreadableImage(reason) from e
    if width < 1 or height < 1:
        raise UnreadableImage("image has no pixels")
    pixels, fingerprint = preprocess_gray(gray, image_size)
    return DecodedImage(pixels, fingerprint, pixel_hash(gray), width, height, mode, note)
