"""`run_certify`: fine-tune with Gaussian noise, certify the smoothed model on the test split, attack it.

Writes out_dir/noise-model/ (the fine-tuning run), out_dir/certify.partial.json after every batch of
images (an interrupted run continues from it: each batch draws its noise from its own seed, so the
result does not depend on where a run was interrupted), then out_dir/certify.json and
out_dir/figures/certified_accuracy.png, and removes the partial file.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from fortify import __version__
from fortify.certify import metrics
from fortify.certify.attack import smoothed_pgd
from fortify.certify.settings import CertifySettings
from fortify.certify.smoothing import (
    certify,
    max_certifiable_radius,
    predict_from_counts,
    smoothed_counts,
)
from fortify.data import ImageDataset
from fortify.errors import ConfigError
from fortify.evaluation.batches import count_passes
from fortify.evaluation.inputs import (
    TestSet,
    check_checkpoint_path,
    open_checkpoint,
    open_test_set,
    stratified_limit,
)
from fortify.fileio import read_json, sha256_file, write_json
from fortify.progress import tasks as progress_tasks
from fortify.report.certify_section import certified_accuracy_figure
from fortify.runtime import Runtime

CERTIFY_FORMAT = "fortify-certify/1"
PARTIAL = "certify.partial.json"
FIGURE = "figures/certified_accuracy.png"


def threat_radii(eps: float, image_size: int, in_channels: int = 1) -> dict:
    """The L-inf threat model in L2 terms. Every L-inf perturbation of size eps has L2 norm <= eps*sqrt(d),
    so a certificate at that radius covers the whole L-inf ball; eps*sqrt(d)/2 is the L2 budget fortify's CW
    and APGD-L2 numbers use (fortify.evaluation.cw_l2_budget), which covers only part of it."""
    d = in_channels * image_size * image_size
    return {
        "norm": "linf",
        "eps": eps,
        "d": d,
        "l2_equivalent": eps * math.sqrt(d),
        "l2_ball": eps * math.sqrt(d) / 2,
        "labels": {
            "l2_equivalent": "eps*sqrt(d) (contains the L-inf ball)",
            "l2_ball": "eps*sqrt(d)/2 (fortify's L2 budget)",
        },
    }


def spread_subset(dataset: ImageDataset, limit: int | None) -> ImageDataset:
    """The class-stratified, evenly spaced subset every fortify `--limit` takes (evaluation.inputs)."""
    return stratified_limit(dataset, limit)


def _batch_seed(seed: int, batch: int) -> int:
    # Distinct, reproducible streams per batch of images, independent of where a run was interrupted.
    return (seed * 1_000_003 + batch) % (2**63)


def _finetune(
    start: Path,
    cache_dir: str | Path | None,
    info: dict,
    test: TestSet,
    data: str | Path,
    settings: CertifySettings,
    runtime: Runtime,
    out: Path,
    progress: bool,
    resume: bool,
) -> tuple[Path, dict]:
    from fortify.training import TrainConfig, train

    cfg = TrainConfig(
        data=str(data),
        split=test.manifest,  # the split the test images come from: never train on them
        model=str(info["model"]),
        mode="noise",
        noise_sigma=settings.sigma,
        epochs=settings.finetune_epochs,
        image_size=int(info["image_size"]),
        batch_size=settings.finetune_batch_size,
        lr=settings.finetune_lr,
        seed=settings.seed,
        out=str(out / "noise-model"),
        device=str(runtime.device),
        precision=runtime.precision,
        init=str(start),
        optimizer="adamw",
        # Recalibrating batch norm on CLEAN training images (the loop's default) would give statistics the
        # smoothed classifier never sees: it only ever runs the model on noisy images. Keep the running
        # statistics of the noisy training batches instead.
        bn_recalibrate=False,
        cache_dir=str(cache_dir) if cache_dir is not None else None,
        # Fine-tune on the training data the start checkpoint saw (smoke runs: k images per class).
        limit_per_class=(info.get("config") or {}).get("limit_per_class"),
    )
    t0 = time.perf_counter()
    summary = train(cfg, resume=resume, force=not resume, progress=progress)
    last = summary.get("last") or {}
    return out / "noise-model" / "last.safetensors", {
        "config": cfg.to_dict(),
        "run_dir": str(out / "noise-model"),
        "checkpoint": "last.safetensors",  # the model after K epochs, as Cohen et al. (not val-selected)
        "epochs": summary["epochs_completed"],
        "seconds": time.perf_counter() - t0,
        "train_noisy_acc": last.get("train_adv_acc"),
        "val_clean_acc": last.get("val_clean_acc"),
    }


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
    # Empirical check. Balls are nested, so an image the smoothed classifier gets wrong at one radius stays
    # wrong at every larger one (the same x_adv lies inside): only images still right are attacked again.
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


def _model_label(settings: CertifySettings, info: dict, finetune: dict | None) -> str:
    who = f"the {settings.start_from} checkpoint"
    if finetune is not None:
        return (
            f"{who} fine-tuned {finetune['epochs']} epoch(s) with Gaussian noise "
            f"sigma={settings.sigma:g} (training mode 'noise')"
        )
    cfg = info.get("config") or {}
    if info.get("mode") == "noise" and cfg.get("noise_sigma") == settings.sigma:
        return f"{who} as is (trained with Gaussian noise sigma={settings.sigma:g})"
    return (
        f"{who} as is, NOT trained with Gaussian noise at sigma={settings.sigma:g}: smoothing a model "
        "that never saw noisy inputs mostly abstains"
    )


def _certify_all(
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
                partial_path,
                {"format": CERTIFY_FORMAT + "-partial", "fingerprint": fingerprint, "images": records},
            )
            advance(len(idx))
    seconds_loop = time.perf_counter() - t_cert
    return records, resumed, seconds_loop, fingerprint["checkpoint_sha256"]


def run_certify(
    normal_checkpoint: str | Path | None,
    adversarial_checkpoint: str | Path | None = None,
    *,
    data: str | Path,
    split: str | Path | None = None,
    out_dir: str | Path,
    settings: CertifySettings | None = None,
    runtime: Runtime | None = None,
    progress: bool = False,
    resume: bool = True,
    cache_dir: str | Path | None = None,
) -> dict:
    """Certify the randomized-smoothing model built from `settings.start_from`'s checkpoint (see the module
    docstring for the files). `resume=False` discards a partial run and the noise-model run in out_dir."""
    started = time.perf_counter()
    s = (settings or CertifySettings()).validate()
    runtime = runtime or Runtime.resolve()
    start = normal_checkpoint if s.start_from == "normal" else adversarial_checkpoint
    if start is None:
        raise ConfigError(f"start_from={s.start_from!r} but no {s.start_from} checkpoint was given")
    start = check_checkpoint_path(start)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    _, start_info = open_checkpoint(start)
    test = open_test_set(data, start_info, start, split=split, progress=progress, cache_dir=cache_dir)
    finetune = None
    ckpt = start
    if s.finetune_epochs > 0:
        ckpt, finetune = _finetune(
            start, cache_dir, start_info, test, data, s, runtime, out, progress, resume
        )
    model, info = open_checkpoint(ckpt, device="cpu")
    model = runtime.prepare_model(model).eval()
    ds = spread_subset(test.dataset, s.limit)
    classes = list(ds.classes)
    x, y = ds.tensors()
    tm = threat_radii(s.eps, int(info["image_size"]), int(info.get("in_channels", 1)))
    # Certified and empirical accuracies, both at 0, the chosen radii and the threat model's two radii.
    radii = sorted({0.0, *s.radii, tm["l2_ball"], tm["l2_equivalent"]})

    records, resumed, seconds_loop, ckpt_sha = _certify_all(
        model, ds, x, y, ckpt, radii, s, runtime, out, progress=progress, resume=resume
    )
    for r in records:
        r["path"] = ds.paths[r["index"]]
    certified = [metrics.certified_at(records, r) for r in radii]
    empirical = [metrics.empirical_at(records, r) for r in radii]
    n_img = max(len(records), 1)
    cost_keys = ("certify_forward", "attack_gradient", "attack_forward")
    payload = {
        "format": CERTIFY_FORMAT,
        "fortify_version": __version__,
        "method": "randomized smoothing, CERTIFY with a one-sided Clopper-Pearson bound "
        "(Cohen, Rosenfeld & Kolter 2019); empirical check by smoothed PGD-L2 with EOT (Salman et al. 2019)",
        "settings": s.to_dict(),
        "sigma": s.sigma,
        "n0": s.n0,
        "n": s.n,
        "alpha": s.alpha,
        "seed": s.seed,
        "checkpoints": {
            "normal": str(normal_checkpoint) if normal_checkpoint else None,
            "adversarial": str(adversarial_checkpoint) if adversarial_checkpoint else None,
            "start": str(start),
            "certified": str(ckpt),
            "certified_sha256": ckpt_sha,
        },
        "model": {
            "name": info["model"],
            "mode": info.get("mode"),
            "label": _model_label(s, start_info, finetune),
        },
        "finetune": finetune,
        "data": {
            "manifest": test.manifest,
            "split_seed": test.split_seed,
            "n": len(records),
            "classes": classes,
            "image_size": int(info["image_size"]),
            "synthetic": bool(ds.synthetic),
            "limit": s.limit,
            "subset": None
            if s.limit is None or s.limit >= len(test.dataset)
            else f"{len(ds)} of {len(test.dataset)} test images, class-stratified, evenly spaced within each "
            "class in file order (fortify.certify.run.spread_subset)",
        },
        "runtime": runtime.describe(),
        "threat_model": tm,
        "max_certifiable_radius": max_certifiable_radius(s.sigma, s.n, s.alpha),
        "abstain": metrics.abstain_block(records),
        "certified": certified,
        "reported_radii": list(s.radii),
        "curve": {"points": metrics.certified_curve(records, metrics.curve_radii(records))},
        "per_class": metrics.per_class(records, classes, radii),
        "empirical": {
            "attack": {
                "name": "smoothed PGD-L2 (SmoothAdv, EOT over noise)",
                "steps": s.attack_steps,
                "samples": s.attack_samples,
                "votes": s.votes_under_attack,
                "step_size": "2.5*radius/steps",
                "random_start": True,
                "judged_by": "smoothed classifier's majority vote over fresh noise (PREDICT recorded too)",
            },
            "at": empirical,
        },
        "sanity": [metrics.consistency_check(certified, empirical)],
        "cost": {
            "seconds_per_image": {
                "certify": sum(r["seconds"]["certify"] for r in records) / n_img,
                "attack": sum(r["seconds"]["attack"] for r in records) / n_img,
            },
            "passes_per_image": {k: sum(r["passes"][k] for r in records) / n_img for k in cost_keys},
            "seconds": {
                "finetune": finetune["seconds"] if finetune else 0.0,
                "certify_and_attack_this_run": seconds_loop,
                "total_this_run": time.perf_counter() - started,
            },
            "images_from_partial": resumed,
        },
        "figures": {"certified_accuracy": FIGURE},
        "per_image": records,
    }
    certified_accuracy_figure(payload, out / FIGURE)
    write_json(out / "certify.json", payload)
    (out / PARTIAL).unlink(missing_ok=True)
    return payload
