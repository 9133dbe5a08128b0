"""`fortify attack`: adversarial test images as 8-bit PNGs plus per-image results.

PNGs are at the model's input size. Saving to 8 bits rounds each pixel to the nearest of 256
levels, which can move an image slightly outside the eps-ball or undo a marginal attack, so
`attacks.json` records the prediction both on the float adversarial image (`adv_pred`, what the
attack produced) and on the saved PNG (`png_pred`, what a reader of the file would get).
"""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fortify import __version__
from fortify.attacks import AttackSpec
from fortify.evaluation.attack_set import for_evaluation, threat_model_dict
from fortify.evaluation.batches import attack_dataset, predict
from fortify.evaluation.loading import check_checkpoint_path, checkpoint_record, open_model, open_test_set
from fortify.evaluation.metrics import perturbation_norms
from fortify.fileio import atomic_write_bytes, write_json
from fortify.models.contract import ContractModel
from fortify.progress import tasks as progress_tasks
from fortify.runtime import Runtime, seed_everything


def to_png_bytes(image: torch.Tensor) -> bytes:
    """(1, H, W) float in [0, 1] -> 8-bit grayscale PNG."""
    pixels = (image.squeeze(0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def _png_name(i: int, cls: str, path: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(path).stem).strip("_") or "image"
    return f"{i:04d}_{cls}_{stem}.png"


def _write_images(out: Path, ds, x_adv, y, preds: dict, adv_prob, l2, linf) -> list[dict]:
    """One 8-bit PNG per attacked image under out/images/, and its record for attacks.json."""
    clean_pred, adv_pred, png_pred = preds["clean_pred"], preds["adv_pred"], preds["png_pred"]
    records = []
    for i in range(len(ds)):
        cls = ds.classes[int(y[i])]
        name = _png_name(i, cls, ds.paths[i])
        atomic_write_bytes(out / "images" / name, to_png_bytes(x_adv[i]))
        correct = bool(clean_pred[i] == y[i])
        records.append(
            {
                "path": ds.paths[i],
                "png": f"images/{name}",
                "label": cls,
                "clean_pred": ds.classes[int(clean_pred[i])],
                "adv_pred": ds.classes[int(adv_pred[i])],
                "adv_conf": float(adv_prob[i, adv_pred[i]]),
                "png_pred": ds.classes[int(png_pred[i])],
                "success": correct and bool(adv_pred[i] != y[i]),
                "l2": float(l2[i]),
                "linf": float(linf[i]),
            }
        )
    return records


def attack_checkpoint(
    checkpoint: str | Path | ContractModel,
    *,
    data: str | Path,
    attack: AttackSpec,
    out_dir: str | Path,
    split: str | Path | None = None,
    limit: int | None = None,
    runtime: Runtime | None = None,
    batch_size: int = 64,
    progress: bool = True,
    seed: int = 0,
    cache_dir: str | Path | None = None,
) -> dict:
    """Attack the test split; write out_dir/images/*.png and out_dir/attacks.json (last). `checkpoint`
    may also be a model from elsewhere behind its input contract (`fortify.models.load_external_model`)."""
    if not isinstance(checkpoint, ContractModel):
        check_checkpoint_path(checkpoint)
    spec = for_evaluation(attack)
    runtime = runtime or Runtime.resolve()
    model, info, ref = open_model(checkpoint)
    model = runtime.prepare_model(model).eval()
    test = open_test_set(data, info, ref, split=split, limit=limit, progress=progress, cache_dir=cache_dir)
    ds = test.dataset
    x, y = ds.tensors()

    seed_everything(seed)
    t0 = time.perf_counter()
    with progress_tasks(progress) as start:
        advance = start(f"attack {spec}", len(x))
        # CW with max_l2 returns the input unchanged where no example within the budget exists.
        x_adv = attack_dataset(spec, model, x, y, runtime, batch_size, advance)
    seconds = time.perf_counter() - t0
    clean_pred, _ = predict(model, x, runtime, batch_size)
    adv_pred, adv_prob = predict(model, x_adv, runtime, batch_size)
    x_png = (x_adv * 255).round() / 255
    png_pred, _ = predict(model, x_png, runtime, batch_size)
    l2, linf = perturbation_norms(x, x_adv)

    out = Path(out_dir)
    preds = {"clean_pred": clean_pred, "adv_pred": adv_pred, "png_pred": png_pred}
    records = _write_images(out, ds, x_adv, y, preds, adv_prob, l2, linf)
    n_correct = int((clean_pred == y).sum())
    n_fooled = sum(r["success"] for r in records)
    summary = {
        "format": "fortify-attack/1",
        "fortify_version": __version__,
        "checkpoint": checkpoint.contract.path if isinstance(checkpoint, ContractModel) else str(checkpoint),
        "input_contract": checkpoint_record(checkpoint, info)["input_contract"],
        "data": {
            "root": ds.root,
            "manifest": test.manifest,
            "split": "test",
            "n": len(ds),
            "classes": list(ds.classes),
            "image_size": ds.image_size,
            "synthetic": bool(ds.synthetic),
        },
        "attack": str(spec),
        "threat_model": threat_model_dict(spec),
        "runtime": runtime.describe(),
        "seed": seed,
        "clean_accuracy": n_correct / len(ds),
        "adv_accuracy": float((adv_pred == y).double().mean()),
        "png_accuracy": float((png_pred == y).double().mean()),
        "success_rate": n_fooled / n_correct if n_correct else None,
        "seconds": seconds,
        "images": records,
    }
    write_json(out / "attacks.json", summary)
    return summary
