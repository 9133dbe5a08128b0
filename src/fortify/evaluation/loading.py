"""Opening what an evaluation needs: the checkpoint (or a model from elsewhere behind its input
contract), the matching test split, the output folder.

All user mistakes here (wrong file type, classes or image size that do not match the data, an
output folder holding another run) become one-line `FortifyError`s before any work starts.
"""

from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from fortify.data import DataWarning, ImageDataset, load_manifest, load_split, make_split
from fortify.data.sentinel import SENTINEL_THUMBNAIL, leakage_sentinel
from fortify.errors import CheckpointError, ConfigError, DataError
from fortify.fileio import sha256_file
from fortify.models.contract import ContractModel, InputContract
from fortify.training.checkpoints import load_model


@dataclass
class TestSet:
    dataset: ImageDataset
    manifest: str | None  # path of the split manifest used, None for a fresh default split
    split_seed: int | None  # seed of a fresh default split
    # The leakage sentinel on exactly the scored images against the split's training images, at
    # SENTINEL_THUMBNAIL px (fortify.data.sentinel), with the split's own record beside it ("split").
    sentinel: dict | None = None


def check_checkpoint_path(checkpoint: str | Path) -> Path:
    """Refuse anything but a .safetensors file (never unpickle a .pt/.pth someone hands us)."""
    path = Path(checkpoint)
    if path.suffix != ".safetensors":
        raise CheckpointError(
            f"{checkpoint}: not a .safetensors checkpoint (fortify loads weights without pickle)"
        )
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {checkpoint}")
    return path


def open_checkpoint(
    checkpoint: str | Path, device: torch.device | str = "cpu"
) -> tuple[torch.nn.Module, dict]:
    path = check_checkpoint_path(checkpoint)
    model, info = load_model(path, device=device)
    size = info.get("image_size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 8:
        raise CheckpointError(
            f"{checkpoint}: image_size {size!r} in its JSON cannot be produced from the data"
        )
    if int(info.get("in_channels", 1)) != 1:
        raise CheckpointError(
            f"{checkpoint}: model takes {info['in_channels']} input channels but the data is grayscale (1)"
        )
    return model, info


def external_info(model: ContractModel) -> dict:
    """What an evaluation reads from a checkpoint's JSON, for a model from elsewhere: no class names
    (only the output width is checked against the data), gray input (the wrapper adapts it)."""
    c = model.contract
    return {
        "model": c.model,
        "mode": "external",
        "num_classes": c.num_classes,
        "in_channels": 1,  # the pixel space attacks perturb: the gray image, before the wrapper
        "image_size": c.image_size,
        "classes": None,
        "weights_sha256": c.sha256,
        "input_contract": c.as_dict(),
    }


def open_model(
    checkpoint: str | Path | ContractModel, device: torch.device | str = "cpu"
) -> tuple[torch.nn.Module, dict, Path]:
    """(model, info, reference path) for a fortify checkpoint or a `ContractModel`."""
    if isinstance(checkpoint, ContractModel):
        return checkpoint.to(device), external_info(checkpoint), Path(checkpoint.contract.path or "model")
    model, info = open_checkpoint(checkpoint, device=device)
    return model, info, Path(checkpoint)


def checkpoint_record(checkpoint: str | Path | ContractModel, info: dict) -> dict:
    """results.json's "checkpoint" block, with the input contract the model was evaluated under."""
    contract = info.get("input_contract")
    if contract is None:  # fortify's own checkpoint: normalization is its first layer
        contract = InputContract(
            source="fortify",
            model=str(info.get("model")),
            channels=int(info.get("in_channels", 1)),
            image_size=int(info["image_size"]),
            num_classes=int(info["num_classes"]),
        ).as_dict()
    external = isinstance(checkpoint, ContractModel)
    return {
        "path": checkpoint.contract.path if external else str(checkpoint),
        "sha256": info.get("weights_sha256"),
        "model": info.get("model"),
        "mode": info.get("mode"),
        "train_eps": info.get("eps"),
        "epoch": info.get("epoch"),
        "class_bias": info.get("class_bias"),  # the operating point's logit offsets, when one was chosen
        "input_contract": contract,
    }


def _referenced_manifest(info: dict) -> tuple[str | None, str | None]:
    """(manifest path, sha256) the checkpoint was trained on, as recorded in its JSON (if any)."""
    config = info.get("config") or {}
    for ref in (info.get("split"), info.get("manifest"), config.get("split")):
        sha = None
        if isinstance(ref, dict):
            ref, sha = ref.get("manifest") or ref.get("path"), ref.get("sha256")
        if isinstance(ref, str) and ref:
            return ref, sha
    return None, None


def _find_manifest(ref: str, checkpoint: Path, sha256: str | None) -> Path:
    # Stored as the trainer saw it (often absolute): try as given, then beside the checkpoint and
    # in its parent, so a run directory that was moved or copied still finds its split.json.
    name = Path(ref).name
    candidates = [
        Path(ref),
        checkpoint.parent / ref,
        checkpoint.parent / name,
        checkpoint.parent.parent / name,
    ]
    for cand in candidates:
        if cand.is_file():
            if sha256 and sha256_file(cand) != sha256:
                continue
            return cand
    raise DataError(f"split manifest {ref!r} recorded in {checkpoint.name}'s JSON not found; pass --split")


def _same_classes(info: dict, dataset: ImageDataset, checkpoint: Path) -> None:
    if info.get("classes") is None:  # a model from elsewhere: only its output width is known
        if int(info["num_classes"]) != len(dataset.classes):
            raise ConfigError(
                f"{info['model']} outputs {info['num_classes']} classes; the dataset has "
                f"{len(dataset.classes)} ({', '.join(dataset.classes)})"
            )
        return
    classes = list(info.get("classes") or [])
    if classes != list(dataset.classes):
        raise CheckpointError(
            f"{checkpoint.name} was trained on classes {classes} ({len(classes)}) but the data has "
            f"{list(dataset.classes)} ({len(dataset.classes)})"
        )
    if int(info["num_classes"]) != len(dataset.classes):
        raise CheckpointError(
            f"{checkpoint.name} has {info['num_classes']} outputs but the data has "
            f"{len(dataset.classes)} classes"
        )


def stratified_limit(dataset: ImageDataset, limit: int | None) -> ImageDataset:
    """`limit` images, class-stratified (round-robin quotas, so every class stays represented), evenly
    spaced through each class's images in file order rather than the first k: with scan-grouped splits
    the first k of a class are consecutive slices of one or two scans, which says little about the rest
    (on the quick split the first 16 normal test slices are two scans the normal model gets 2 of 16 right)."""
    if limit is None or limit >= len(dataset):
        return dataset
    if limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    labels = dataset.labels.tolist()
    by_class = {c: [i for i, lab in enumerate(labels) if lab == c] for c in sorted(set(labels))}
    quota = dict.fromkeys(by_class, 0)
    left = limit
    while left > 0:
        for c, ix in by_class.items():
            if left > 0 and quota[c] < len(ix):
                quota[c] += 1
                left -= 1
    keep = []
    for c, ix in by_class.items():
        k = quota[c]
        # floor(x + 0.5): strictly increasing picks when k <= len(ix) (Python's round() can repeat one)
        keep += [ix[int(j * (len(ix) - 1) / (k - 1) + 0.5)] for j in range(k)] if k > 1 else ix[:k]
    return dataset.subset(sorted(keep))


def open_test_set(
    data: str | Path,
    info: dict,
    checkpoint: str | Path,
    *,
    split: str | Path | None = None,
    limit: int | None = None,
    progress: bool = False,
    cache_dir: str | Path | None = None,
    part: str = "test",
    sentinel: bool = False,
) -> TestSet:
    """The test split (or `part`: "val" for choices made before testing) at the checkpoint's image size,
    checked against the checkpoint's classes; with `sentinel`, the leakage sentinel of the images it
    keeps (`scored_sentinel`: one more pass over the data, at thumbnail size)."""
    checkpoint = Path(checkpoint)
    size = int(info["image_size"])
    manifest_path: Path | None = Path(split) if split is not None else None
    ref, sha = _referenced_manifest(info)
    if manifest_path is None:
        manifest_path = _find_manifest(ref, checkpoint, sha) if ref else None
    elif sha and manifest_path.is_file() and sha256_file(manifest_path) != sha:
        # Allowed (e.g. a re-made split of the same data), but its test images may have been
        # training images for this checkpoint: say so rather than report inflated numbers silently.
        warnings.warn(
            f"{manifest_path} is not the split {checkpoint.name} was trained on; its test images may "
            "overlap that training set",
            DataWarning,
            stacklevel=2,
        )
    split_seed = None
    if manifest_path is not None:
        if not manifest_path.is_file():
            raise DataError(f"split manifest not found: {manifest_path}")
        manifest = load_manifest(manifest_path)
        splits = load_split(manifest, data, image_size=size, progress=progress, cache_dir=cache_dir)
    else:
        # No manifest anywhere: make_split is deterministic, so its default seed reproduces the
        # split that a training run without --split makes for itself.
        split_seed = 0
        manifest = make_split(data, seed=split_seed, image_size=size, progress=progress, cache_dir=cache_dir)
        splits = load_split(manifest, data, image_size=size, progress=progress, cache_dir=cache_dir)
    test = splits[part]
    _same_classes(info, test, checkpoint)
    if test.image_size != size:
        raise CheckpointError(
            f"{checkpoint.name} expects {size} px images but the data gives {test.image_size} px"
        )
    test = stratified_limit(test, limit)
    if len(test) == 0:
        raise DataError(f"the {part} split is empty")
    record = scored_sentinel(manifest, data, part, test.paths, cache_dir) if sentinel else None
    return TestSet(test, str(manifest_path) if manifest_path is not None else None, split_seed, record)


def scored_sentinel(manifest, data, part: str, paths: list[str], cache_dir) -> dict:
    """The 1-NN sentinel of the images scored (`paths` of `part`) against the split's training images,
    both loaded straight at SENTINEL_THUMBNAIL px, so it compares like with like: the same images as the
    model, at a size that does not depend on the model's. The split's own record (its whole test set)
    is kept under "split"."""
    thumbs = load_split(manifest, data, image_size=SENTINEL_THUMBNAIL, cache_dir=cache_dir)
    index = {p: i for i, p in enumerate(thumbs[part].paths)}
    scored = thumbs[part].subset([index[p] for p in paths])
    recorded = manifest.sentinel or {}
    split = {k: recorded.get(k) for k in ("accuracy", "n_test", "n_train", "thumbnail_from_px")}
    return {**leakage_sentinel(thumbs["train"], scored), "split": split if recorded else None}


RUN_MARKERS = ("results.json", "examples.safetensors", "attacks.json", "units")


def check_out_dir(out_dir: str | Path, force: bool, resume: bool = False) -> Path:
    """Refuse an output folder that already holds a run (or any files) unless --force (start over: its
    finished units are removed) or --resume (its finished units are reused; evaluation checks they
    belong to this configuration)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    if force and resume:
        raise ConfigError("--force starts over and --resume continues: give one of them")
    if resume:
        return out
    if force and (out / "units").is_dir():
        shutil.rmtree(out / "units")
    if out.is_dir() and any(out.iterdir()) and not force:
        held = [m for m in RUN_MARKERS if (out / m).exists()]
        what = f"another run ({', '.join(held)})" if held else "other files"
        hint = " (or --resume to continue it)" if (out / "units").is_dir() else ""
        raise ConfigError(f"--out {out} already holds {what}; choose another folder or pass --force{hint}")
    return out
