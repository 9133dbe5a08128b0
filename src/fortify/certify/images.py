"""Certifying and attacking the test images in work units (fortify.evaluation.units), resumably.

Per unit of `unit_size` test images: CERTIFY every image, then smoothed PGD at each attack radius on the
images still classified right. Unit k draws all its noise from unit_seed(seed, "certify", k), so its
records do not depend on which process computes it or where a run was interrupted. A finished unit is
written atomically to out_dir/units/ (its per-image records in the file's header), beside the fingerprint
of what produced it: a resumed run reuses it, and refuses units written under another configuration.
Under torchrun rank r computes units r, r + w, ...; rank 0 gathers them and writes certify.json.
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
from fortify.distributed import DistInfo
from fortify.evaluation.batches import count_passes
from fortify.evaluation.units import UnitResult, compute_units, digest, open_units, unit_seed, unit_slices
from fortify.fileio import sha256_file
from fortify.progress import tasks as progress_tasks
from fortify.runtime import Runtime


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
    seed: int,
    attack_radii: list[float],
    settings: CertifySettings,
    runtime: Runtime,
) -> list[dict]:
    """CERTIFY, then smoothed PGD at each attack radius, for one unit of images (all its noise drawn from
    one generator seeded with `seed`); per-image records."""
    s = settings
    gen = torch.Generator().manual_seed(seed)
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
            # Cost of the unit shared equally by its images.
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
    dist: DistInfo,
) -> tuple[list[dict] | None, dict, float, str]:
    """Certify and attack every image in work units kept under out/units/ (reused with `resume`).
    -> (records in test-set order, or None on a torchrun process other than rank 0; the units block
    {size, count, reused, processes}; seconds; the certified checkpoint's sha256)."""
    checkpoint_sha = sha256_file(ckpt)
    # Same settings, model, images and runtime -> a finished unit is exactly what this run would compute.
    fingerprint = json.loads(
        json.dumps(
            {
                **s.to_dict(),
                "checkpoint": checkpoint_sha,
                "images": digest(list(ds.paths)),
                "labels": digest(y),
                "attack_radii": list(radii),
                "precision": runtime.precision,
                "device": runtime.device.type,
            }
        )
    )
    store = open_units(out / "units", fingerprint, resume=resume, dist=dist)
    units = unit_slices(len(ds), s.unit_size)
    t_cert = time.perf_counter()
    with progress_tasks(progress and dist.is_main) as start:
        advance = start("certify", len(ds))

        def unit(k: int, sl: slice) -> UnitResult:
            idx = list(range(sl.start, sl.stop))
            seed = unit_seed(s.seed, "certify", k)
            found = certify_batch(
                model, x[sl], y[sl], idx, seed=seed, attack_radii=radii, settings=s, runtime=runtime
            )
            advance(len(idx))
            # through JSON now, so a record computed here equals one read back from a unit file
            records = json.loads(json.dumps(found))
            return UnitResult(k, sl.start, sl.stop, {"index": torch.tensor(idx)}, {"records": records})

        done, reused = compute_units(units, unit, store, dist)
    seconds_loop = time.perf_counter() - t_cert
    block = {"size": s.unit_size, "count": len(units), "reused": reused, "processes": dist.world_size}
    if not dist.is_main:
        return None, block, seconds_loop, checkpoint_sha
    records = [r for k in range(len(units)) for r in done[k].meta["records"]]
    return records, block, seconds_loop, checkpoint_sha
