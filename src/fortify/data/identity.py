"""Which public dataset this is, when fortify can tell: the report shows the study's published numbers
only beside results on the dataset the study used (IQ-OTH/NCCD, as distributed)."""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any

IQOTHNCCD = "IQ-OTH/NCCD"
# The distributed copy's class folders (benign is misspelt in it; a corrected name is accepted) and its
# 1,097 files (120 benign, 561 malignant, 416 normal).
IQOTHNCCD_FOLDERS = ({"bengin cases", "benign cases"}, {"malignant cases"}, {"normal cases"})
IQOTHNCCD_FILES = 1097


def _folder(path: str) -> str:
    return re.sub(r"\s+", " ", PurePosixPath(path).parent.name.strip().lower())


def identify_dataset(paths: list[str], n_files: int, synthetic: bool) -> dict[str, Any]:
    """{"name": "IQ-OTH/NCCD" or None, "reason": one line}, from the class folders of `paths` (every
    file, unreadable ones included) and the file count."""
    if synthetic:
        return {"name": None, "reason": "synthetic phantom data"}
    folders = sorted({_folder(p) for p in paths})
    matches = len(folders) == len(IQOTHNCCD_FOLDERS) and all(
        any(f in names for f in folders) for names in IQOTHNCCD_FOLDERS
    )
    if not matches:
        return {"name": None, "reason": f"class folders ({', '.join(folders)}) are not IQ-OTH/NCCD's"}
    if n_files != IQOTHNCCD_FILES:
        return {
            "name": None,
            "reason": f"IQ-OTH/NCCD's class folders but {n_files:,} files, not {IQOTHNCCD_FILES:,}: a "
            "modified copy, on which the study's numbers were not measured",
        }
    return {
        "name": IQOTHNCCD,
        "reason": f"IQ-OTH/NCCD's class folders and its {IQOTHNCCD_FILES:,} files",
    }
