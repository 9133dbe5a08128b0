"""Every test image's worst-case adversarial image, kept for the per-image explorer.

Per unit (`unit_adversarial`, stored in the unit's file so resume and torchrun keep it): the adversarial
image of the first headline attack, in order, that fooled the image (else the last attack's output) as
uint8, and that attack's index (-1: none fooled it, or the clean model already got it wrong; such an
image is never attacked). `write_adversarial` joins the units into `adversarial.safetensors` beside
results.json (layout in docs/results-schema.md): N * H * W bytes for the adversarial images, as many for
the clean ones, and a few numbers per image and attack.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from fortify.evaluation.attack_set import is_cw
from fortify.fileio import atomic_write

if TYPE_CHECKING:
    from fortify.evaluation.evaluate import LoadedEvaluation
    from fortify.evaluation.unit_run import Assembled

FORMAT = "fortify-adversarial/1"
IMAGE, FIRST = "adversarial.image", "adversarial.first"


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[0,1] floats to the 8-bit pixels a viewer shows (rounded; at most 1/510 off)."""
    return (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def unit_adversarial(
    y: torch.Tensor,
    clean_pred: torch.Tensor,
    x_adv: dict[str, torch.Tensor],
    pred: dict[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """One unit's worst-case images ({IMAGE: (n,1,H,W) uint8, FIRST: (n,) int64}); `x_adv` and `pred` per
    attack key, in the evaluation's attack order. Empty when no attack ran."""
    keys = list(x_adv)
    if not keys:
        return {}
    clean_ok = (clean_pred == y).cpu()
    image = x_adv[keys[-1]].detach().cpu().clone()
    first = torch.full((len(y),), -1, dtype=torch.long)
    for i in reversed(range(len(keys))):  # the earliest attack that fooled an image writes last, and wins
        fooled = clean_ok & (pred[keys[i]].cpu() != y.cpu())
        first[fooled] = i
        image[fooled] = x_adv[keys[i]].detach().cpu()[fooled]
    return {IMAGE: to_uint8(image), FIRST: first}


def _conf(prob: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    return prob.gather(1, pred.view(-1, 1)).squeeze(1).float()


def write_adversarial(path: str | Path, units: list, ev: LoadedEvaluation, joined: Assembled) -> Path | None:
    """adversarial.safetensors from the finished units (in order), the loaded evaluation (attacks, test
    images, labels) and the joined outcomes. None, nothing written (an older file removed), when a unit
    lacks the images (a unit file written before they were kept, reused by --resume)."""
    from safetensors.torch import save_file

    specs, y, clean_pred, clean_prob = ev.specs, ev.y, joined.clean_pred, joined.clean_prob
    if not specs or any(IMAGE not in u.tensors for u in units):
        Path(path).unlink(missing_ok=True)  # no stale file from an earlier evaluation in this folder
        return None
    tensors = {
        "clean": to_uint8(ev.x),
        "adv": torch.cat([u.tensors[IMAGE] for u in units]),
        "first_fooled": torch.cat([u.tensors[FIRST] for u in units]),
        "labels": y.long(),
        "clean_pred": clean_pred.long(),
        "clean_conf": _conf(clean_prob, clean_pred),
        "prob.clean": clean_prob.float(),
    }
    for key, spec in specs.items():
        pred, prob = joined.outcomes[key].pred, joined.outcomes[key].prob
        tensors.update({f"pred.{key}": pred.long(), f"conf.{key}": _conf(prob, pred)})
        tensors[f"prob.{key}"] = prob.float()
        if is_cw(spec):
            tensors[f"cw_l2.{key}"] = torch.cat([u.tensors[f"attack.{key}.cw_l2"] for u in units]).float()
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {"format": FORMAT, "attacks": json.dumps(list(specs))}
    return atomic_write(path, lambda p: save_file(tensors, str(p), metadata=meta))
