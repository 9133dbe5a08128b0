"""fortify.data: load class-folder image datasets (or the synthetic phantom), audit them, split them.

Public API (see docs/ARCHITECTURE.md): ImageDataset, load_dataset, make_split, make_folds,
save_manifest, load_manifest, load_split, audit_dataset, leakage_sentinel, sentinel_warning;
DICOM windows (WINDOWS, DEFAULT_WINDOW, parse_window) and the split groupings (SPLIT_GROUPINGS).
"""

from fortify.data.audit import audit_dataset
from fortify.data.dataset import ImageDataset, ImageInfo
from fortify.data.dicom import DEFAULT_WINDOW, WINDOWS, parse_window
from fortify.data.discover import IMAGE_EXTENSIONS, clean_class_name
from fortify.data.loader import DataWarning, load_dataset
from fortify.data.sentinel import leakage_sentinel, sentinel_warning
from fortify.data.split import (
    SPLIT_GROUPINGS,
    SplitManifest,
    load_manifest,
    load_split,
    make_folds,
    make_split,
    save_manifest,
)

__all__ = [
    "DEFAULT_WINDOW",
    "IMAGE_EXTENSIONS",
    "SPLIT_GROUPINGS",
    "WINDOWS",
    "SplitManifest",
    "DataWarning",
    "ImageDataset",
    "ImageInfo",
    "audit_dataset",
    "clean_class_name",
    "load_dataset",
    "load_manifest",
    "load_split",
    "leakage_sentinel",
    "make_folds",
    "make_split",
    "parse_window",
    "save_manifest",
    "sentinel_warning",
]
