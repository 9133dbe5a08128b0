"""Options of the commands that load data, declared once: the DICOM display window and the split grouping."""

from __future__ import annotations

from typing import Any

import typer

from fortify.data.dicom import DEFAULT_WINDOW

WINDOW_HELP = (
    "DICOM display window on Hounsfield units: lung (W1500 L-600), mediastinum (W350 L50) or WIDTH,LEVEL "
    "(e.g. 400,40). Ignored for PNG/JPEG; recorded in the split manifest, which later commands follow."
)
GROUPING_HELP = (
    "What stays on one side: 'scan' (runs of similar consecutive slices + near-duplicates; default), "
    "'near-duplicate' (near-identical images only: leaks neighbouring slices) or 'given' (the dataset's "
    "own train/, val/, test/ folders). DICOM files with PatientID (else study/series UID) are grouped by it."
)


def window_option(default: str | None = DEFAULT_WINDOW) -> Any:
    """`--window`; default None where the profile or manifest decides unless it is given."""
    return typer.Option(default, "--window", help=WINDOW_HELP)


def grouping_option(default: str | None = "scan") -> Any:
    """`--grouping`; default None where the profile decides unless it is given."""
    return typer.Option(default, "--grouping", help=GROUPING_HELP)
