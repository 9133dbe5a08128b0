"""Certifying and attacking the test images, batch by batch, resumably.

Per batch: CERTIFY every image, then smoothed PGD at each attack radius on the images still classified
right. After every batch the records so far go to out_dir/certify.partial.json with a fingerprint of
what produced them; a run with the same fingerprint continues from them. Each batch draws its noise from
its own seed, so the result does not depend on where a run was interrupted.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from fortify.certify.attack import smoothed_pgd
from fortify.certify.settings import CertifySettings
from fortify.certify.smoothing import Certificate, certify, predict_from_counts, smoothed_counts
from fortify.data import ImageDataset
from fortify.evaluation.batches import count_passes
from fortify.fileio import read_json, sha256_file, write_json
from fortify.progress import tasks as progress_tasks
from fortify.runtime import Runtime

PARTIAL = "certify.partial.json"
PARTIAL_FORMAT = "fortify-certify/1-partial"  # certify.json's format, partial


def _batch_seed(seed: int, batch: int) -> int:
    # Distinct, reproducible streams per batch of images, independent of where a run was interrupted.
    return (seed * 1_000_003 + batch) % (2**63)


def _entry(radius: float, counts: torch.Tensor, alpha: float, attacked: bool) -> dict:
    return {
        "radius": radius,
        "attacked": attacked,
        "majority": int(counts.argmax()),
        "predict": predict_from_counts(counts, alpha),
        "counts": [int(v) for v in counts],
    }


def certify_batch(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    indices: list[int],
    *,
    batch: int,
    attack_radii: list[float],
    settings: CertifySettings,
    runtime: Runtime,
) -> list[dict]:
    """CERTIFY, then smoothed PGD at each attack radius, for one batch of images; per-image records."""
    s = settings
    gen = torch.Generator().manual_seed(_batch_seed(s.seed, batch))
    xb = runtime.to_device(x)
    t0 = time.perf_counter()
    with count_passes(model) as cert_count:
        certs = certify(
            model,
            xb,
            sigma=s.sigma,
            n0=s.n0,
            n=s.n,
            alpha=s.alpha,
            batch_size=s.batch_size,
            generator=gen,
            runtime=runtime,
        )
    t1 = time.perf_counter()
    entries, x_adv_cost = _attack_at_radii(model, xb, y, certs, attack_radii, s, runtime, gen)
    t2 = time.perf_counter()
    k = len(certs)
    return [
        {
            "index": idx,
            "label": int(y[i]),
            "prediction": c.prediction,
            "radius": c.radius,
            "p_lower": c.p_lower,
            "counts_select": c.counts_select,
            "counts_estimate": c.counts_estimate,
            "attack": entries[i],
            # Cost of the batch shared equally by its images.
            "seconds": {"certify": (t1 - t0) / k, "attack": (t2 - t1) / k},
            "passes": {
                "certify_forward": cert_count.forward_passes / k,
                "attack_gradient": x_adv_cost["gradient_evaluations"] / k,
                "attack_forward": x_adv_cost["forward_passes"] / k,
            },
        }
        for i, (idx, c) in enumerate(zip(indices, certs, strict=True))
    ]


def _attack_at_radii(
    model: torch.nn.Module,
    xb: torch.Tensor,
    y: torch.Tensor,
    certs: list[Certificate],
    attack_radii: list[float],
    s: CertifySettings,
    runtime: Runtime,
    gen: torch.Generator,
) -> tuple[list[list[dict]], dict[str, int]]:
    """The empirical check: per image, the smoothed classifier's votes at every attack radius, and the
    attack's passes. Balls are nested, so an image the smoothed classifier gets wrong at one radius stays
    wrong at every larger one (the same x_adv lies inside): only images still right are attacked again."""
    current = [_entry(0.0, torch.tensor(c.counts_estimate), s.alpha, False) for c in certs]
    entries: list[list[dict]] = [[] for _ in certs]
    x_adv_cost = {"forward_passes": 0, "gradient_evaluations": 0}
    for r in attack_radii:
        alive = [i for i, e in enumerate(current) if e["majority"] == int(y[i])]
        if r > 0 and alive:
            idx = torch.tensor(alive)
            with count_passes(model) as cost, runtime.autocast():
                adv = smoothed_pgd(
                    model,
                    xb[idx.to(xb.device)],
                    y[idx].to(xb.device),
                    sigma=s.sigma,
                    eps=r,
                    steps=s.attack_steps,
                    samples=s.attack_samples,
                    generator=gen,
                )
                votes = smoothed_counts(
                    model,
                    adv,
                    sigma=s.sigma,
                    n=s.votes_under_attack,
                    batch_size=s.batch_size,
                    generator=gen,
                    runtime=runtime,
                    num_classes=len(certs[0].counts_estimate),
                )
            for k, v in cost.as_dict().items():
                x_adv_cost[k] += v
            for j, i in enumerate(alive):
                current[i] = _entry(r, votes[j], s.alpha, True)
        for i in range(len(certs)):
            entries[i].append({**current[i], "radius": r, "attacked": current[i]["attacked"] and i in alive})
    return entries, x_adv_cost


def certify_all(
    model: torch.nn.Module,
    ds: ImageDataset,
    x: torch.Tensor,
    y: torch.Tensor,
    ckpt: Path,
    radii: list[float],
    s: CertifySettings,
    runtime: Runtime,
    out: Path,
    *,
    progress: bool,
    resume: bool,
) -> tuple[list[dict], int, float, str]:
    """Certify and attack every image, batch by batch, writing the records so far after each batch;
    a run with the same fingerprint continues from them. -> (records, resumed, seconds, checkpoint sha256)."""
    # Same settings, model, images and runtime -> the partial records are exactly what this run would compute.
    fingerprint = json.loads(
        json.dumps(
            {
                "settings": s.to_dict(),
                "checkpoint_sha256": sha256_file(ckpt),
                "images": list(ds.paths),
                "runtime": runtime.describe(),
            }
        )
    )
    partial_path = out / PARTIAL
    records: list[dict] = []
    resumed = 0
    if resume and partial_path.is_file():
        saved = read_json(partial_path)
        if saved.get("fingerprint") == fingerprint:
            records = saved["images"]
            resumed = len(records)
    t_cert = time.perf_counter()
    per = s.save_every
    batches = [list(range(i, min(i + per, len(ds)))) for i in range(0, len(ds), per)]
    with progress_tasks(progress) as start:
        advance = start("certify", len(ds))
        advance(resumed)
        for b, idx in enumerate(batches):
            if idx[0] < len(records):
                continue  # done before the interruption (batches are written whole)
            records += certify_batch(
                model, x[idx], y[idx], idx, batch=b, attack_radii=radii, settings=s, runtime=runtime
            )
            write_json(
                partial_path, {"format": PARTIAL_FORMAT, "fingerprint": fingerprint, "images": records}
            )
            advance(len(idx))
    seconds_loop = time.perf_counter() - t_cert
    return records, resumed, seconds_loop, fingerprint["checkpoint_sha256"]
