"""`run_certify`: fine-tune with Gaussian noise, certify the smoothed model on the test split, attack it.

Writes out_dir/noise-model/ (the fine-tuning run, finetune.py), out_dir/units/ (images.py: the test images
in work units, each written as it finishes and drawing its noise from its own seed, so an interrupted run
resumed gives what an uninterrupted one gives, and torchrun's processes share them out), then, on rank 0,
out_dir/certify.json and out_dir/figures/certified_accuracy.png.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from fortify import __version__
from fortify.certify import metrics
from fortify.certify.finetune import finetune_with_noise, model_label
from fortify.certify.images import certify_all
from fortify.certify.settings import CertifySettings
from fortify.certify.smoothing import max_certifiable_radius
from fortify.data import ImageDataset
from fortify.distributed import init_distributed
from fortify.errors import ConfigError
from fortify.evaluation.loading import (
    TestSet,
    check_checkpoint_path,
    open_checkpoint,
    open_test_set,
    stratified_limit,
)
from fortify.fileio import write_json
from fortify.report.figures.certify import certified_accuracy_figure
from fortify.runtime import Runtime

CERTIFY_FORMAT = "fortify-certify/1"
FIGURE = "figures/certified_accuracy.png"
METHOD = (
    "randomized smoothing, CERTIFY with a one-sided Clopper-Pearson bound "
    "(Cohen, Rosenfeld & Kolter 2019); empirical check by smoothed PGD-L2 with EOT (Salman et al. 2019)"
)


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


def run_certify(
    normal_checkpoint: str | Path | None,
    adversarial_checkpoint: str | Path | None = None,
    *,
    data: str | Path,
    split: str | Path | None = None,
    out_dir: str | Path,
    settings: CertifySettings | dict | None = None,
    runtime: Runtime | None = None,
    progress: bool = False,
    cache_dir: str | Path | None = None,
    resume: bool = False,
) -> dict | None:
    """Certify the randomized-smoothing model built from `settings.start_from`'s checkpoint (see the module
    docstring for the files). `resume=True` reuses the finished units and continues the noise-model run in
    out_dir (refusing units of another configuration); `resume=False` starts the noise model over and
    refuses a units folder that holds finished units. Under torchrun only rank 0 writes certify.json and
    returns the payload (the others return None)."""
    started = time.perf_counter()
    if isinstance(settings, CertifySettings):
        s = settings.validate()
    else:
        s = CertifySettings.from_dict(settings)
    runtime = runtime or Runtime.resolve()
    dist = init_distributed(runtime.device.type)
    start = normal_checkpoint if s.start_from == "normal" else adversarial_checkpoint
    if start is None:
        raise ConfigError(f"start_from={s.start_from!r} but no {s.start_from} checkpoint was given")
    start = check_checkpoint_path(start)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    _, start_info = open_checkpoint(start)
    test = open_test_set(data, start_info, start, split=split, progress=progress, cache_dir=cache_dir)
    ckpt, finetune = start, None
    if s.finetune_epochs > 0:
        ckpt, finetune = finetune_with_noise(
            start, cache_dir, start_info, test, data, s, runtime, out, progress, resume
        )
    model, info = open_checkpoint(ckpt, device="cpu")
    model = runtime.prepare_model(model).eval()
    ds = spread_subset(test.dataset, s.limit)
    x, y = ds.tensors()
    tm = threat_radii(s.eps, int(info["image_size"]), int(info.get("in_channels", 1)))
    # Certified and empirical accuracies, both at 0, the chosen radii and the threat model's two radii.
    radii = sorted({0.0, *s.radii, tm["l2_ball"], tm["l2_equivalent"]})

    records, units, seconds_loop, ckpt_sha = certify_all(
        model, ds, x, y, ckpt, radii, s, runtime, out, progress=progress, resume=resume, dist=dist
    )
    if records is None:  # a torchrun process other than rank 0: its units went to rank 0
        return None
    for r in records:
        r["path"] = ds.paths[r["index"]]
    provenance = {
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
            "label": model_label(s, start_info, finetune),
        },
        "finetune": finetune,
        "data": _data_block(test, ds, records, info, s),
    }
    payload = _payload(s, provenance, records, radii, tm, runtime)
    payload["cost"] = _cost(records, finetune, seconds_loop, started)
    payload["units"] = units
    payload["runtime"]["threads"] = torch.get_num_threads()
    payload["figures"] = {"certified_accuracy": FIGURE}
    payload["per_image"] = records
    certified_accuracy_figure(payload, out / FIGURE)
    write_json(out / "certify.json", payload)
    return payload


def _payload(
    s: CertifySettings, provenance: dict, records: list[dict], radii: list[float], tm: dict, runtime: Runtime
) -> dict:
    """certify.json up to its "sanity" block: the settings, `provenance` (checkpoints, model, finetune, data:
    what was certified), and the accuracies."""
    certified = [metrics.certified_at(records, r) for r in radii]
    empirical = [metrics.empirical_at(records, r) for r in radii]
    return {
        "format": CERTIFY_FORMAT,
        "fortify_version": __version__,
        "method": METHOD,
        "settings": s.to_dict(),
        "sigma": s.sigma,
        "n0": s.n0,
        "n": s.n,
        "alpha": s.alpha,
        "seed": s.seed,
        **provenance,
        "runtime": runtime.describe(),
        "threat_model": tm,
        "max_certifiable_radius": max_certifiable_radius(s.sigma, s.n, s.alpha),
        "abstain": metrics.abstain_block(records),
        "certified": certified,
        "reported_radii": list(s.radii),
        "curve": {"points": metrics.certified_curve(records, metrics.curve_radii(records))},
        "per_class": metrics.per_class(records, provenance["data"]["classes"], radii),
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
    }


def _data_block(test: TestSet, ds: ImageDataset, records: list[dict], info: dict, s: CertifySettings) -> dict:
    return {
        "manifest": test.manifest,
        "split_seed": test.split_seed,
        "n": len(records),
        "classes": list(ds.classes),
        "image_size": int(info["image_size"]),
        "synthetic": bool(ds.synthetic),
        "limit": s.limit,
        "subset": None
        if s.limit is None or s.limit >= len(test.dataset)
        else f"{len(ds)} of {len(test.dataset)} test images, class-stratified, evenly spaced within each "
        "class in file order (fortify.certify.run.spread_subset)",
    }


def _cost(records: list[dict], finetune: dict | None, seconds_loop: float, started: float) -> dict:
    n_img = max(len(records), 1)
    cost_keys = ("certify_forward", "attack_gradient", "attack_forward")
    return {
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
    }
