"""On-disk cache of decoded, preprocessed images.

One safetensors file per (set of file contents, preprocessing parameters). The key hashes the
sorted sha256 of every file's bytes plus the preprocessing parameters, so renaming files still
hits, and changing one byte of one image (or the image size) misses. Entries inside are indexed
by content hash. Loading uses safetensors (no pickle); writing is atomic (fortify.fileio), so an
interrupted run never leaves a half-written cache that a later run would trust.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from fortify.data.decode import FINGERPRINT_SIZE
from fortify.fileio import atomic_write

CACHE_FORMAT = "fortify-decode/1"


def default_cache_dir() -> Path:
    env = os.environ.get("FORTIFY_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fortify"


@dataclass
class CacheEntries:
    """Decoded results by file content hash."""

    images: torch.Tensor  # uint8 (M, 1, S, S)
    fingerprints: torch.Tensor  # uint8 (M, F*F)
    decoded: dict[str, dict]  # sha256 -> {"row", "pixel_sha256", "width", "height", "mode", "note", "tags"?}
    unreadable: dict[str, str]  # sha256 -> reason


def cache_key(file_hashes: list[str], image_size: int, window_tag: str | None = None) -> str:
    """`window_tag`: the DICOM display window (decoded pixels depend on it); None for datasets without
    DICOM files, so their key (and cache file) is the same as before windows existed."""
    h = hashlib.sha256()
    params = {
        "format": CACHE_FORMAT,
        "image_size": image_size,
        "fingerprint": FINGERPRINT_SIZE,
        "grayscale": True,
        "crop": "center-square",
        "resize": "bilinear",
    }
    if window_tag is not None:
        params["window"] = window_tag
    h.update(json.dumps(params, sort_keys=True).encode())
    for fh in sorted(set(file_hashes)):
        h.update(fh.encode())
    return h.hexdigest()


def _suffix(image_size: int, window_tag: str | None) -> str:
    return f"-s{image_size}" + (f"-{window_tag}" if window_tag else "") + ".safetensors"


def cache_path(cache_dir: Path, key: str, image_size: int, window_tag: str | None = None) -> Path:
    return cache_dir / "decoded" / f"{key[:32]}{_suffix(image_size, window_tag)}"


def load_entries(path: Path) -> CacheEntries | None:
    """Return the cached entries, or None when absent or unusable (then the caller re-decodes)."""
    if not path.is_file():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != CACHE_FORMAT:
            return None
        tensors = load_file(str(path))
        info = json.loads(meta["entries"])
        return CacheEntries(tensors["images"], tensors["fingerprints"], info["decoded"], info["unreadable"])
    except (OSError, SafetensorError, KeyError, ValueError, json.JSONDecodeError):
        return None


def save_entries(path: Path, entries: CacheEntries) -> bool:
    """Write the cache atomically; a read-only cache dir only costs speed, so failures return False."""
    meta = {
        "format": CACHE_FORMAT,
        "entries": json.dumps({"decoded": entries.decoded, "unreadable": entries.unreadable}),
    }
    tensors = {"images": entries.images.contiguous(), "fingerprints": entries.fingerprints.contiguous()}
    try:
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    except OSError:
        return False
    return True


def recent_entries(
    cache_dir: Path, image_size: int, *, exclude: Path, limit: int = 3, window_tag: str | None = None
) -> list[CacheEntries]:
    """The newest few caches at this image size (and DICOM window): after a small change to a dataset (a
    file added or replaced) most images are still in there, so only the new ones need decoding."""
    files = sorted(
        (p for p in (cache_dir / "decoded").glob(f"*{_suffix(image_size, window_tag)}") if p != exclude),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    found = (load_entries(p) for p in files[:limit])
    return [
        e
        for e in found
        if e is not None
        and e.images.shape[1:] == (1, image_size, image_size)
        and e.fingerprints.shape[1:] == (FINGERPRINT_SIZE**2,)
    ]


def merge_entries(parts: list[CacheEntries], wanted: set[str], image_size: int) -> CacheEntries:
    """One CacheEntries holding every wanted hash found in `parts` (first part wins)."""
    images, fps, decoded, unreadable = [], [], {}, {}
    for part in parts:
        for sha in wanted:
            if sha in decoded or sha in unreadable:
                continue
            if sha in part.unreadable:
                unreadable[sha] = part.unreadable[sha]
            elif sha in part.decoded:
                entry = dict(part.decoded[sha])
                row = entry["row"]
                entry["row"] = len(images)
                images.append(part.images[row])
                fps.append(part.fingerprints[row])
                decoded[sha] = entry
    return CacheEntries(
        torch.stack(images) if images else torch.zeros((0, 1, image_size, image_size), dtype=torch.uint8),
        torch.stack(fps) if fps else torch.zeros((0, FINGERPRINT_SIZE**2), dtype=torch.uint8),
        decoded,
        unreadable,
    )
