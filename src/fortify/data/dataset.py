"""The in-memory dataset every later stage consumes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class ImageInfo:
    """Facts about one decoded source image that the audit and the split need.

    `pixel_sha256` hashes the decoded 8-bit grayscale pixels at the original size (plus the shape),
    so two files that differ only in JPEG metadata or encoding still count as exact duplicates.
    """

    pixel_sha256: str
    width: int
    height: int
    mode: str  # PIL mode of the file before conversion ("L", "RGB", "I;16", ...; "DICOM MONOCHROME2 12-bit")
    file_bytes: int
    # DICOM only: PatientID, StudyInstanceUID, SeriesInstanceUID, Modality, SliceThickness when present.
    tags: dict[str, str] | None = field(default=None, compare=False)


@dataclass
class ImageDataset:
    images: torch.Tensor  # uint8 (N, 1, S, S): grayscale, center-cropped square, resized to S
    labels: torch.Tensor  # int64 (N,)
    classes: list[str]  # clean class names, index == label
    paths: list[str]  # relative to root; phantom: "phantom/<class>/<i>"
    file_hashes: list[str]  # sha256 of the file bytes (phantom: of the generated pixels)
    root: str | None  # absolute dataset root; None for the phantom
    image_size: int
    synthetic: bool  # True for the phantom: anything reporting on it must say so
    # Extensions beyond the contract (optional, so code that builds an ImageDataset by hand still works):
    infos: list[ImageInfo] | None = field(default=None, repr=False)
    fingerprints: torch.Tensor | None = field(default=None, repr=False)  # uint8 (N, F*F) near-dup thumbnails
    skipped: list[dict[str, str]] = field(default_factory=list, repr=False)  # unreadable files: path, reason
    warnings: list[str] = field(default_factory=list, repr=False)  # one line each, also sent to `warnings`
    source: str = ""  # what was passed to load_dataset ("phantom:n=40" or the absolute root)
    # A root of train/, val/ (or validation/), test/ folders: each image's folder ("train", "val", "test").
    given_splits: list[str] | None = field(default=None, repr=False)
    window: str | None = None  # DICOM display window (fortify.data.dicom.parse_window spec) if any DICOM
    # Each image's patient/scan group id, as a split manifest records it (load_split); None otherwise.
    groups: list[str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.shape[1] != 1:
            raise ValueError(
                f"images must be uint8 (N, 1, S, S), got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if not (len(self.labels) == len(self.paths) == len(self.file_hashes) == n):
            raise ValueError("images, labels, paths and file_hashes must have the same length")
        if self.infos is not None and len(self.infos) != n:
            raise ValueError("infos must have one entry per image")
        if self.given_splits is not None and len(self.given_splits) != n:
            raise ValueError("given_splits must have one entry per image")
        if self.groups is not None and len(self.groups) != n:
            raise ValueError("groups must have one entry per image")

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, indices: Sequence[int] | torch.Tensor) -> ImageDataset:
        idx = torch.as_tensor(
            list(indices) if not isinstance(indices, torch.Tensor) else indices, dtype=torch.long
        )
        picks = idx.tolist()
        return ImageDataset(
            images=self.images[idx],
            labels=self.labels[idx],
            classes=list(self.classes),
            paths=[self.paths[i] for i in picks],
            file_hashes=[self.file_hashes[i] for i in picks],
            root=self.root,
            image_size=self.image_size,
            synthetic=self.synthetic,
            infos=[self.infos[i] for i in picks] if self.infos is not None else None,
            fingerprints=self.fingerprints[idx] if self.fingerprints is not None else None,
            skipped=list(self.skipped),
            warnings=list(self.warnings),
            source=self.source,
            given_splits=[self.given_splits[i] for i in picks] if self.given_splits is not None else None,
            window=self.window,
            groups=[self.groups[i] for i in picks] if self.groups is not None else None,
        )

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Float32 images in [0, 1] and int64 labels, ready for a model."""
        return self.images.float().div_(255.0), self.labels.clone()

    def class_counts(self) -> dict[str, int]:
        counts = torch.bincount(self.labels, minlength=len(self.classes)).tolist()
        return dict(zip(self.classes, counts, strict=True))
