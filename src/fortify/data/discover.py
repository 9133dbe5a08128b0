"""Find the class folders and image files of a class-folder dataset."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from fortify.errors import DataError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"})
# Folders that archive tools leave behind; never classes.
_IGNORED_DIRS = frozenset({"__macosx"})
# Known misspellings in public datasets (IQ-OTH/NCCD ships "Bengin cases").
_SPELLING_FIXES = {"bengin": "benign"}


def clean_class_name(folder_name: str) -> str:
    """ "Bengin cases" -> "benign", "Malignant cases" -> "malignant", "Some Class" -> "some class"."""
    name = re.sub(r"\s+", " ", folder_name.strip().lower())
    name = re.sub(r"[ _-]+cases?$", "", name)
    return _SPELLING_FIXES.get(name, name)


@dataclass(frozen=True)
class DiscoveredFiles:
    root: Path
    classes: list[str]  # clean names, sorted; index == label
    class_folders: list[str]  # folder name per class, same order
    files: list[tuple[str, int]]  # (path relative to root, label), sorted by class then name


def _natural_key(name: str) -> list[object]:
    # "case (2)" before "case (10)", so listings read like the folder does in a file browser.
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def discover(root: str | Path) -> DiscoveredFiles:
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"dataset path does not exist: {root}")
    if not root.is_dir():
        raise DataError(f"dataset path is not a folder: {root} (expected one subfolder per class)")
    root = root.resolve()
    try:
        subdirs = sorted(
            p
            for p in root.iterdir()
            if p.is_dir() and not p.name.startswith(".") and p.name.lower() not in _IGNORED_DIRS
        )
    except PermissionError as e:
        raise DataError(f"cannot read dataset folder {root}: permission denied") from e
    if not subdirs:
        loose = sum(1 for p in root.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        hint = f" ({loose} images lie directly in it)" if loose else ""
        raise DataError(f"no class subfolders in {root}{hint}; expected one subfolder of images per class")

    by_clean: dict[str, Path] = {}
    for d in subdirs:
        clean = clean_class_name(d.name)
        if clean in by_clean:
            raise DataError(
                f"class folders {by_clean[clean].name!r} and {d.name!r} both mean class {clean!r}"
            )
        by_clean[clean] = d
    if len(by_clean) < 2:
        only = next(iter(by_clean))
        raise DataError(
            f"only one class folder ({only!r}) in {root}; a classifier needs at least two classes"
        )

    classes = sorted(by_clean)
    files: list[tuple[str, int]] = []
    for label, name in enumerate(classes):
        folder = by_clean[name]
        images = sorted(
            (
                p
                for p in folder.iterdir()
                if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
            ),
            key=lambda p: _natural_key(p.name),
        )
        if not images:
            raise DataError(
                f"class folder {folder.name!r} has no images (allowed: "
                f"{', '.join(sorted(e[1:] for e in IMAGE_EXTENSIONS))})"
            )
        files.extend((p.relative_to(root).as_posix(), label) for p in images)
    return DiscoveredFiles(
        root=root, classes=classes, class_folders=[by_clean[c].name for c in classes], files=files
    )
