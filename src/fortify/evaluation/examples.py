"""The few attacked test images the report draws (the study's Fig. 3-6) without recomputing.

Layout (docs/results-schema.md): `clean` (k,1,H,W float32 in [0,1]), `labels`, `clean_pred`,
`clean_conf`, and per attack key A: `adv.A`, `pred.A`, `conf.A` (predicted class and the softmax
probability of that prediction).
"""

from __future__ import annotations

from pathlib import Path

import torch

from fortify.fileio import atomic_write


def example_indices(labels: torch.Tensor, per_class: int) -> list[int]:
    """The first `per_class` test images of each class, in class order (deterministic)."""
    chosen: list[int] = []
    for k in sorted(set(labels.tolist())):
        chosen.extend((labels == k).nonzero().flatten()[:per_class].tolist())
    return chosen


def _conf(prob: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    return prob.gather(1, pred.view(-1, 1)).squeeze(1).float()


def write_examples(
    path: str | Path,
    indices: list[int],
    x: torch.Tensor,
    y: torch.Tensor,
    clean_pred: torch.Tensor,
    clean_prob: torch.Tensor,
    attacks: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
) -> Path:
    """`attacks[A] = (x_adv, pred, prob)` over the whole test set; only `indices` are stored."""
    from safetensors.torch import save_file

    idx = torch.tensor(indices, dtype=torch.long)
    tensors = {
        "clean": x[idx].float(),
        "labels": y[idx].long(),
        "clean_pred": clean_pred[idx].long(),
        "clean_conf": _conf(clean_prob[idx], clean_pred[idx]),
    }
    for key, (x_adv, pred, prob) in attacks.items():
        tensors[f"adv.{key}"] = x_adv[idx].float()
        tensors[f"pred.{key}"] = pred[idx].long()
        tensors[f"conf.{key}"] = _conf(prob[idx], pred[idx])
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    return atomic_write(path, lambda p: save_file(tensors, str(p), metadata={"format": "fortify-examples/1"}))
