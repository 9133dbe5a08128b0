"""Choosing a model's operating point on validation images: one logit offset per class.

An adversarially trained model on IQ-OTH/NCCD predicts "benign" for no image at all, yet on validation it
still ranks benign scans above normal ones about as well as the normal model does: the threshold moved,
not the ranking. Offsets added to the logits (fortify.models.ClassBias) move the thresholds back. They
are chosen here to maximise balanced accuracy (mean recall over the classes) on the split's VALIDATION
images, optionally keeping some class's recall at or above a floor (e.g. malignant, whose miss is the
costly error). The test images are never read. The offsets become part of the checkpoint, so every
later evaluation attacks the model with them.

Search: an exhaustive grid (offsets in [-max_offset, +max_offset] in steps of `step`) over the classes
allowed to move, one class held at 0 (only differences between logits matter). Ties go to the higher
accuracy, then to the smaller total shift, so a model that gains nothing keeps offsets of zero.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from fortify.errors import ConfigError
from fortify.evaluation.metrics import classification_metrics

MAX_GRID_POINTS = 200_000  # candidates scored at most (3 classes at the default grid: 81**2 = 6,561)


@dataclass
class OperatingPoint:
    bias: list[float]  # added to the logits, one per class (classes[i])
    classes: list[str]
    moved: list[str]  # classes whose offset was searched (the others stay at 0)
    min_recall: dict[str, float]  # validation recall floors the choice respects
    before: dict  # validation metrics without the offsets (metrics_from_confusion layout)
    after: dict  # ... with them

    def to_dict(self) -> dict:
        return asdict(self)


def _recalls(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Recall of every class for each row of `pred` (candidates x images); NaN for an absent class."""
    hits = pred == labels
    out = torch.full((pred.shape[0], num_classes), float("nan"))
    for k in range(num_classes):
        mask = labels == k
        if mask.any():
            out[:, k] = hits[:, mask].float().mean(dim=1)
    return out


def choose_class_bias(
    logits: torch.Tensor,
    labels: torch.Tensor,
    classes: Sequence[str],
    *,
    move: Sequence[str] | None = None,
    min_recall: dict[str, float] | None = None,
    max_offset: float = 4.0,
    step: float = 0.1,
) -> OperatingPoint:
    """Offsets maximising balanced accuracy of `logits + bias` on these (validation) images.

    `move`: the classes whose offset may change (default: every class but the one held at 0, the most
    frequent). `min_recall`: {class: floor}; candidates below a floor are not considered, and a
    ConfigError says so when none reaches it."""
    classes = list(classes)
    c = len(classes)
    if logits.ndim != 2 or logits.shape[1] != c or len(labels) != len(logits):
        raise ConfigError(f"logits {tuple(logits.shape)} do not match {len(labels)} labels and {c} classes")
    if len(labels) == 0:
        raise ConfigError("no validation images to choose an operating point on")
    if step <= 0 or max_offset <= 0:
        raise ConfigError("the offset grid needs step > 0 and max_offset > 0")
    floors = dict(min_recall or {})
    for name in [*floors, *(move or [])]:
        if name not in classes:
            raise ConfigError(f"unknown class {name!r}; the model's classes are {', '.join(classes)}")
    logits, labels = logits.float().cpu(), labels.long().cpu()
    counts = torch.bincount(labels, minlength=c)
    reference = int(counts.argmax())
    moved = [k for k in range(c) if k != reference] if move is None else [classes.index(m) for m in move]
    moved = sorted(set(moved))
    n_steps = round(max_offset / step)
    values = [i * step for i in range(-n_steps, n_steps + 1)]
    if len(values) ** len(moved) > MAX_GRID_POINTS:
        raise ConfigError(
            f"{len(values)}^{len(moved)} offset combinations: move fewer classes (--move) or take a "
            "coarser grid"
        )
    grid = torch.zeros(len(values) ** len(moved), c)
    if moved:
        grid[:, moved] = torch.tensor(list(itertools.product(values, repeat=len(moved))))
    best_key, best = None, None
    for chunk in grid.split(4096):
        pred = (logits.unsqueeze(0) + chunk.unsqueeze(1)).argmax(dim=2)  # candidates x images
        recalls = _recalls(pred, labels, c)
        ok = torch.ones(len(chunk), dtype=torch.bool)
        for name, floor in floors.items():
            r = recalls[:, classes.index(name)]
            ok &= r.isnan() | (r >= floor - 1e-9)
        balanced = recalls.nanmean(dim=1)
        accuracy = (pred == labels).float().mean(dim=1)
        shift = chunk.abs().sum(dim=1)
        for i in ok.nonzero().flatten().tolist():
            key = (round(float(balanced[i]), 9), round(float(accuracy[i]), 9), -round(float(shift[i]), 9))
            if best_key is None or key > best_key:
                best_key, best = key, chunk[i]
    if best is None:
        wanted = ", ".join(f"{k} >= {v:.3g}" for k, v in floors.items())
        raise ConfigError(f"no offsets within ±{max_offset:g} keep validation recall {wanted}")
    bias = [round(float(b), 6) + 0.0 for b in best]  # + 0.0: no "-0.0" in the JSON
    before = classification_metrics(labels, logits.argmax(dim=1), classes)
    after = classification_metrics(labels, (logits + best).argmax(dim=1), classes)
    return OperatingPoint(bias, classes, [classes[k] for k in moved], floors, before, after)


def validation_logits(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """fp32 logits on the CPU (the choice is a comparison of logits: no autocast rounding in it)."""
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    with torch.no_grad():
        batches = [x[i : i + batch_size].to(device) for i in range(0, len(x), batch_size)]
        return torch.cat([model(b).float().cpu() for b in batches])


def resolve_floors(spec: dict[str, str], classes: Sequence[str], before: dict) -> dict[str, float]:
    """{class: "0.95" | "keep"} -> {class: floor}; "keep" is the recall the model has before any offset."""
    floors = {}
    for name, text in spec.items():
        if name not in classes:
            raise ConfigError(f"unknown class {name!r}; the model's classes are {', '.join(classes)}")
        if text == "keep":
            floors[name] = float(before["per_class"][name]["sensitivity"] or 0.0)
            continue
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"--min-recall {name}={text}: expected a number in [0, 1] or 'keep'") from None
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"--min-recall {name}={text}: expected a number in [0, 1] or 'keep'")
        floors[name] = value
    return floors


def choose_for_checkpoint(
    checkpoint: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    split: str | Path | None = None,
    move: Sequence[str] | None = None,
    min_recall: dict[str, str] | None = None,
    max_offset: float = 4.0,
    step: float = 0.1,
    cache_dir: str | Path | None = None,
) -> dict:
    """Choose the operating point of `checkpoint` on its split's validation images and write a new
    checkpoint `out` (same weights; JSON with `class_bias` and `operating_point`). Returns that record."""
    from fortify.evaluation.loading import open_checkpoint, open_test_set
    from fortify.fileio import sha256_file
    from fortify.training.checkpoints import save_checkpoint

    checkpoint, out = Path(checkpoint), Path(out)
    if out.suffix != ".safetensors":
        raise ConfigError(f"--out {out}: expected a .safetensors path (its .json is written beside it)")
    if out.resolve() == checkpoint.resolve():
        raise ConfigError("--out must differ from --checkpoint (the original stays as it was)")
    model, info = open_checkpoint(checkpoint)
    val = open_test_set(data, info, checkpoint, split=split, part="val", cache_dir=cache_dir)
    x, y = val.dataset.tensors()
    logits = validation_logits(model, x)
    classes = list(info["classes"])
    unbiased = classification_metrics(y, logits.argmax(dim=1), classes)
    floors = resolve_floors(min_recall or {}, classes, unbiased)
    point = choose_class_bias(
        logits, y, classes, move=move, min_recall=floors, max_offset=max_offset, step=step
    )
    old = info.get("class_bias") or [0.0] * len(classes)
    record = {k: v for k, v in info.items() if k not in ("format", "weights_file", "weights_sha256")}
    record["class_bias"] = [round(a + b, 6) + 0.0 for a, b in zip(old, point.bias, strict=True)]
    manifest = Path(val.manifest).resolve() if val.manifest else None
    manifest_sha = sha256_file(manifest) if manifest else None
    record["operating_point"] = {
        "from_checkpoint": str(checkpoint.resolve()),
        "from_sha256": info.get("weights_sha256"),
        "chosen_on": {
            "split": "val",
            "manifest": str(manifest) if manifest else None,
            "manifest_sha256": manifest_sha,
            "n": len(y),
        },
        "objective": "balanced_accuracy",
        "grid": {"max_offset": max_offset, "step": step},
        **point.to_dict(),
    }
    if manifest is not None:  # the new file may live elsewhere: point evaluations at the same split
        record["split"] = {"manifest": str(manifest), "sha256": manifest_sha, "in_run_dir": False}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out.with_suffix(""), model, record)  # the offsets are not weights: same weights file
    return record
