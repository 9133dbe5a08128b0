"""Find the class folders and image files of a class-folder dataset.

Two layouts: ROOT/<class>/<images>, or predefined splits ROOT/{train, val|validation|valid, test}/<class>/
<images> (val optional), whose files keep their split for `make_split(grouping="given")`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from fortify.errors import DataError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"})
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
    class_folders: list[str]  # folder name per class, same order (in train/ for predefined splits)
    files: list[tuple[str, int]]  # (path relative to root, label), sorted by class, then split, then name
    # Predefined splits (root/train, root/val or validation, root/test, each of class folders): the
    # split of each file ("train" | "val" | "test").
    given_splits: list[str] | None = None


# Folder names that make a root a predefined split rather than a class (lower case -> split name).
SPLIT_FOLDERS = {"train": "train", "val": "val", "validation": "val", "valid": "val", "test": "test"}
SPLIT_ORDER = ("train", "val", "test")


def _natural_key(name: str) -> list[object]:
    # "case (2)" before "case (10)", so listings read like the folder does in a file browser.
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _subdirs(folder: Path) -> list[Path]:
    try:
        return sorted(
            p
            for p in folder.iterdir()
            if p.is_dir() and not p.name.startswith(".") and p.name.lower() not in _IGNORED_DIRS
        )
    except PermissionError as e:
        raise DataError(f"cannot read dataset folder {folder}: permission denied") from e


def _class_dirs(folder: Path, subdirs: list[Path]) -> dict[str, Path]:
    """Clean class name -> class folder, for a folder holding one subfolder per class."""
    if not subdirs:
        loose = sum(1 for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        hint = f" ({loose} images lie directly in it)" if loose else ""
        raise DataError(f"no class subfolders in {folder}{hint}; expected one subfolder of images per class")
    by_clean: dict[str, Path] = {}
    for d in subdirs:
        clean = clean_class_name(d.name)
        if clean in by_clean:
            raise DataError(
                f"class folders {by_clean[clean].name!r} and {d.name!r} both mean class {clean!r}"
            )
        by_clean[clean] = d
    return by_clean


def _images(folder: Path, root: Path) -> list[Path]:
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
            f"class folder {folder.relative_to(root).as_posix()!r} has no images (allowed: "
            f"{', '.join(sorted(e[1:] for e in IMAGE_EXTENSIONS))})"
        )
    return images


def _split_layout(root: Path, subdirs: list[Path]) -> dict[str, Path] | None:
    """{"train": path, "val": path, "test": path} when the root holds predefined split folders."""
    named = [d for d in subdirs if d.name.lower() in SPLIT_FOLDERS]
    names = {SPLIT_FOLDERS[d.name.lower()] for d in named}
    if not named or (not {"train", "test"} <= names and len(named) < len(subdirs)):
        return None  # class folders (one of them may happen to be called "test")
    if len(named) < len(subdirs):
        others = ", ".join(d.name for d in subdirs if d not in named)
        raise DataError(
            f"{root} holds train/ and test/ beside other folders ({others}); a dataset root holds either "
            "class folders or train/, val/ (optional), test/ folders of class folders"
        )
    if len(named) == 1:
        return None  # a single split-named folder: the one-class error below says what is wrong
    missing = [n for n in ("train", "test") if n not in names]
    if missing:
        raise DataError(
            f"{root} holds {', '.join(d.name + '/' for d in named)} but no {missing[0]}/ folder; predefined "
            "splits need train/ and test/ (val/ optional)"
        )
    layout: dict[str, Path] = {}
    for d in named:
        split = SPLIT_FOLDERS[d.name.lower()]
        if split in layout:
            raise DataError(f"folders {layout[split].name!r} and {d.name!r} both mean the {split} split")
        layout[split] = d
    return layout


def discover(root: str | Path) -> DiscoveredFiles:
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"dataset path does not exist: {root}")
    if not root.is_dir():
        raise DataError(f"dataset path is not a folder: {root} (expected one subfolder per class)")
    root = root.resolve()
    subdirs = _subdirs(root)
    layout = _split_layout(root, subdirs)
    if layout is None:
        per_split = {"": _class_dirs(root, subdirs)}
    else:
        per_split = {s: _class_dirs(layout[s], _subdirs(layout[s])) for s in SPLIT_ORDER if s in layout}
        for split, dirs in per_split.items():
            extra = [d.name for c, d in dirs.items() if c not in per_split["train"]]
            if extra:
                raise DataError(
                    f"class folder {extra[0]!r} in {layout[split].name}/ has no counterpart in "
                    f"{layout['train'].name}/"
                )
    first = next(iter(per_split.values()))
    if len(first) < 2:
        only = next(iter(first))
        raise DataError(
            f"only one class folder ({only!r}) in {root}; a classifier needs at least two classes"
        )

    classes = sorted(first)
    files: list[tuple[str, int]] = []
    given: list[str] = []
    for label, name in enumerate(classes):
        for split, dirs in per_split.items():
            if name not in dirs:
                continue
            images = _images(dirs[name], root)
            files.extend((p.relative_to(root).as_posix(), label) for p in images)
            given.extend([split] * len(images))
    return DiscoveredFiles(
        root=root,
        classes=classes,
        class_folders=[first[c].name for c in classes],
        files=files,
        given_splits=given if layout is not None else None,
    )
