"""`load_dataset`: class folders (or the phantom) -> ImageDataset, with the decode cache."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import torch

from fortify.data.cache import (
    CacheEntries,
    cache_key,
    cache_path,
    default_cache_dir,
    load_entries,
    merge_entries,
    recent_entries,
    save_entries,
)
from fortify.data.dataset import ImageDataset, ImageInfo
from fortify.data.decode import FINGERPRINT_SIZE, UnreadableImage, decode_image, preprocess_gray
from fortify.data.dicom import (
    DEFAULT_WINDOW,
    DicomDecoderMissing,
    Window,
    decode_dicom,
    is_dicom,
    parse_window,
)
from fortify.data.discover import discover
from fortify.data.phantom import PHANTOM_CLASSES, PHANTOM_SIZE, parse_phantom_spec, phantom_files
from fortify.errors import DataError
from fortify.progress import track

# More unreadable files than this fraction means something is systematically wrong (wrong folder,
# wrong format); below it, the bad files are skipped and listed.
MAX_UNREADABLE_FRACTION = 0.10
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 2048


class DataWarning(UserWarning):
    """Something about the data the user should know (skipped files, lossy conversions)."""


def _check_image_size(image_size: int) -> None:
    if not isinstance(image_size, int) or not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
        raise DataError(
            f"image size must be an integer between {MIN_IMAGE_SIZE} and {MAX_IMAGE_SIZE}, got {image_size!r}"
        )


def _summarise(items: list[str], limit: int = 3) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def _emit(dataset: ImageDataset) -> ImageDataset:
    for line in dataset.warnings:
        warnings.warn(line, DataWarning, stacklevel=3)
    return dataset


def load_dataset(
    data: str | Path,
    *,
    image_size: int = 128,
    cache_dir: str | Path | None = None,
    progress: bool = False,
    window: str | Window = DEFAULT_WINDOW,
) -> ImageDataset:
    """Load a class-folder dataset, or the synthetic phantom ("phantom" / "phantom:n=40").

    `window` (DICOM files only): the display window applied to Hounsfield units, "lung" (default),
    "mediastinum" or "WIDTH,LEVEL" (fortify.data.dicom). Raises DataError (one line) when the data cannot
    be used. A few unreadable files are skipped: they are listed in `dataset.skipped` and reported once
    as a DataWarning.
    """
    _check_image_size(image_size)
    win = parse_window(window)
    if isinstance(data, str):
        per_class = parse_phantom_spec(data)
        if per_class is not None:
            return _emit(_load_phantom(per_class, image_size, data.strip()))
    return _emit(_load_folder(Path(data), image_size, cache_dir, progress, win))


def _load_phantom(per_class: int, image_size: int, spec: str) -> ImageDataset:
    images, fps, labels, paths, hashes, infos = [], [], [], [], [], []
    for path, label, pix, sha in phantom_files(per_class):
        img, fp = preprocess_gray(pix, image_size)
        images.append(img)
        fps.append(fp)
        labels.append(label)
        paths.append(path)
        hashes.append(sha)
        infos.append(ImageInfo(sha, PHANTOM_SIZE, PHANTOM_SIZE, "L", pix.nbytes))
    return ImageDataset(
        images=torch.from_numpy(np.stack(images)).unsqueeze(1),
        labels=torch.tensor(labels, dtype=torch.long),
        classes=list(PHANTOM_CLASSES),
        paths=paths,
        file_hashes=hashes,
        root=None,
        image_size=image_size,
        synthetic=True,
        infos=infos,
        fingerprints=torch.from_numpy(np.stack(fps)),
        source=spec,
    )


def _decode_all(
    root: Path, todo: dict[str, str], image_size: int, progress: bool, window: Window
) -> CacheEntries:
    """Decode one file per distinct content hash (`todo`: sha256 -> relative path)."""
    imgs, fps, decoded, unreadable = [], [], {}, {}
    for sha, rel in track(todo.items(), len(todo), "Decoding images", progress):
        tags = None
        try:
            if is_dicom(rel):
                d, tags = decode_dicom((root / rel).read_bytes(), image_size, window)
            else:
                d = decode_image((root / rel).read_bytes(), image_size)
        except DicomDecoderMissing as e:  # the installation, not the file: every such file would fail
            raise DataError(f"{rel}: {e}") from e
        except UnreadableImage as e:
            unreadable[sha] = str(e)
            continue
        except OSError as e:
            unreadable[sha] = f"cannot read file: {e.strerror or e}"
            continue
        decoded[sha] = {
            "row": len(imgs),
            "pixel_sha256": d.pixel_sha256,
            "width": d.width,
            "height": d.height,
            "mode": d.mode,
            "note": d.note,
        }
        if tags is not None:
            decoded[sha]["tags"] = tags
        imgs.append(d.pixels)
        fps.append(d.fingerprint)
    images = (
        torch.from_numpy(np.stack(imgs)).unsqueeze(1)
        if imgs
        else torch.zeros((0, 1, image_size, image_size), dtype=torch.uint8)
    )
    fingerprints = (
        torch.from_numpy(np.stack(fps)) if fps else torch.zeros((0, FINGERPRINT_SIZE**2), dtype=torch.uint8)
    )
    return CacheEntries(images, fingerprints, decoded, unreadable)


def _load_folder(
    path: Path, image_size: int, cache_dir: str | Path | None, progress: bool, window: Window
) -> ImageDataset:
    found = discover(path)
    root = found.root
    # The window changes DICOM pixels only: it keys the cache only when there are DICOM files.
    window_tag = window.tag if any(is_dicom(rel) for rel, _ in found.files) else None

    hashes, sizes, read_errors = _hash_files(root, [rel for rel, _ in found.files], progress)
    entries = _cached_entries(
        root, found.files, hashes, read_errors, image_size, cache_dir, progress, window, window_tag
    )

    rows, labels, paths, file_hashes, infos, skipped, notes, given = [], [], [], [], [], [], {}, []
    splits = found.given_splits or [""] * len(found.files)
    for (rel, label), sha, nbytes, split in zip(found.files, hashes, sizes, splits, strict=True):
        if rel in read_errors:
            skipped.append({"path": rel, "reason": read_errors[rel]})
            continue
        if sha in entries.unreadable:
            skipped.append({"path": rel, "reason": entries.unreadable[sha]})
            continue
        e = entries.decoded[sha]
        rows.append(e["row"])
        labels.append(label)
        paths.append(rel)
        file_hashes.append(sha)
        infos.append(ImageInfo(e["pixel_sha256"], e["width"], e["height"], e["mode"], nbytes, e.get("tags")))
        given.append(split)
        if e["note"]:  # group "I;16 image rescaled to 8-bit (min-max 0..4095)" by its kind
            notes.setdefault(e["note"].split(" (")[0], []).append(rel)

    _check_usable(found.classes, found.class_folders, labels, skipped, len(found.files))
    messages = _load_messages(skipped, notes)

    idx = torch.tensor(rows, dtype=torch.long)
    return ImageDataset(
        images=entries.images[idx],
        labels=torch.tensor(labels, dtype=torch.long),
        classes=found.classes,
        paths=paths,
        file_hashes=file_hashes,
        root=str(root),
        image_size=image_size,
        synthetic=False,
        infos=infos,
        fingerprints=entries.fingerprints[idx],
        skipped=skipped,
        warnings=messages,
        source=str(root),
        given_splits=given if found.given_splits is not None else None,
        window=window.name if window_tag is not None else None,
    )


def _hash_files(root: Path, rels: list[str], progress: bool) -> tuple[list[str], list[int], dict[str, str]]:
    """(sha256 hex per file, size in bytes per file, rel -> reason for each file that cannot be read)."""
    hashes, sizes = [], []
    read_errors: dict[str, str] = {}  # a file we cannot even open (permissions) is skipped like a corrupt one
    for rel in track(rels, len(rels), "Hashing files", progress):
        try:
            blob = (root / rel).read_bytes()
        except OSError as e:
            read_errors[rel] = f"cannot read file: {e.strerror or e}"
            blob = b""
        hashes.append(hashlib.sha256(blob).hexdigest())
        sizes.append(len(blob))
    return hashes, sizes, read_errors


def _cached_entries(
    root: Path,
    files: list[tuple[str, int]],
    hashes: list[str],
    read_errors: dict[str, str],
    image_size: int,
    cache_dir: str | Path | None,
    progress: bool,
    window: Window,
    window_tag: str | None,
) -> CacheEntries:
    """The decoded images of every readable file: from this file set's cache entry when it is complete,
    else from recent cache entries plus decoding the rest (then saved as this file set's entry)."""
    readable_hashes = [h for (rel, _), h in zip(files, hashes, strict=True) if rel not in read_errors]
    cdir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cpath = cache_path(cdir, cache_key(readable_hashes, image_size, window_tag), image_size, window_tag)
    entries = load_entries(cpath)
    if entries is None or any(
        h not in entries.decoded and h not in entries.unreadable for h in readable_hashes
    ):
        todo: dict[str, str] = {}
        for (rel, _), sha in zip(files, hashes, strict=True):
            if rel not in read_errors:
                todo.setdefault(sha, rel)
        recent = recent_entries(cdir, image_size, exclude=cpath, window_tag=window_tag)
        known = merge_entries(recent, set(todo), image_size)
        todo = {
            sha: rel for sha, rel in todo.items() if sha not in known.decoded and sha not in known.unreadable
        }
        fresh = _decode_all(root, todo, image_size, progress, window)
        entries = merge_entries([known, fresh], set(readable_hashes), image_size)
        save_entries(cpath, entries)
    return entries


def _load_messages(skipped: list[dict], notes: dict[str, list[str]]) -> list[str]:
    """The dataset's warnings: the skipped files, then each kind of conversion note with its files."""
    messages = []
    if skipped:
        messages.append(
            f"skipped {len(skipped)} unreadable file(s): "
            + _summarise([f"{s['path']} ({s['reason']})" for s in skipped])
        )
    for note, rels in notes.items():
        messages.append(f"{note} ({len(rels)} file(s)): {_summarise(rels)}")
    return messages


def _check_usable(
    classes: list[str], folders: list[str], labels: list[int], skipped: list[dict], n_files: int
) -> None:
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(classes))
    for name, folder, count in zip(classes, folders, counts, strict=True):
        if count == 0:
            raise DataError(f"class {name!r} (folder {folder!r}) has no readable images")
    if len(skipped) > max(1, MAX_UNREADABLE_FRACTION * n_files):
        first = skipped[0]
        raise DataError(
            f"{len(skipped)} of {n_files} images are unreadable (first: {first['path']}: "
            f"{first['reason']}); is this the right folder?"
        )
