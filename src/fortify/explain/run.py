"""`run_explain`: what a white-box attack changes in each model's attention, in numbers and figures,
and how well attacks crafted on another architecture transfer to the models.

Per model: clean and PGD-adversarial predictions (scored in fp32), a CAM of the clean and of the
adversarial image, the attention shift between the two per image (explain/shift.py), its mean
with a bootstrap interval overall, per class and per attack outcome, and, for the normal and
adversarial model together, the paired difference on the same test images. Writes
`out_dir/explain.json` (atomically, at the very end) and `out_dir/figures/explain-<model>.png`.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fortify.attacks import parse_spec
from fortify.errors import CheckpointError, ConfigError
from fortify.evaluation.batches import attack_dataset, predict, progress_bars
from fortify.evaluation.inputs import check_checkpoint_path, open_checkpoint, open_test_set
from fortify.explain.cam import METHODS, check_method, class_activation_maps, target_layer
from fortify.explain.crossarch import train_surrogate, transfer_to_targets
from fortify.explain.figures import explain_figure
from fortify.explain.shift import bootstrap_mean, paired_difference, shift_metrics
from fortify.fileio import write_json
from fortify.intervals import interval_or_none
from fortify.models import list_models
from fortify.runtime import Runtime, seed_everything

FORMAT = "fortify-explain/1"
TARGETS = ("predicted", "true")
OUTCOMES = ("fooled", "resisted", "clean_error")


@dataclass
class ExplainSettings:
    method: str = "gradcam"  # gradcam | gradcam++ | xgradcam | eigencam | layercam
    target: str = "predicted"  # class each map explains: the model's prediction on that image, or the truth
    attack: str = "pgd:eps=2/255,steps=10"  # white-box on each model, and crafted on the surrogate
    limit: int | None = None  # first N test images, class-stratified; None = the whole test split
    batch_size: int = 32
    grid: int = 32  # maps are area-averaged to at most grid x grid cells before the metrics
    top_fraction: float = 0.10
    n_boot: int = 2000
    figure_per_class: int = 2  # images per class in each model's figure
    amplify: float = 50.0  # perturbation shown as 0.5 + amplify * (x_adv - x)
    surrogate: str = "smallcnn"  # registry architecture for cross-architecture transfer, or "none"
    surrogate_epochs: int = 3
    surrogate_lr: float = 0.002
    surrogate_batch_size: int = 32
    surrogate_limit_per_class: int | None = None
    seed: int = 0

    def validate(self) -> ExplainSettings:
        check_method(self.method)
        if self.target not in TARGETS:
            raise ConfigError(f"unknown CAM target {self.target!r}; choose one of {', '.join(TARGETS)}")
        spec = parse_spec(self.attack)
        tm = spec.threat_model()
        if tm is None:
            raise ConfigError(f"attack {self.attack!r} has no threat model (give CW a max_l2)")
        if self.surrogate != "none" and self.surrogate not in list_models():
            raise ConfigError(
                f"unknown surrogate {self.surrogate!r}; choose one of {', '.join([*list_models(), 'none'])}"
            )
        for name in ("batch_size", "grid", "n_boot", "surrogate_epochs", "surrogate_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.surrogate_batch_size < 2:
            raise ConfigError("surrogate_batch_size must be >= 2 (batch norm needs two samples)")
        if self.limit is not None and self.limit < 2:
            raise ConfigError(f"limit must be >= 2 (intervals need two images), got {self.limit}")
        if not 0 < self.top_fraction < 0.5:
            raise ConfigError(f"top_fraction must be in (0, 0.5), got {self.top_fraction}")
        if self.figure_per_class < 0 or not self.amplify > 0 or not self.surrogate_lr > 0:
            raise ConfigError("figure_per_class must be >= 0, amplify and surrogate_lr > 0")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExplainSettings:
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ConfigError(f"unknown explain setting(s) {', '.join(unknown)}; valid: {', '.join(known)}")
        return cls(**d).validate()


# SMOKE: seconds on 32 px smallcnn (24 test images). QUICK: ResNet18 at 128 px, all 158 test images, about
# 10 CPU-minutes on 2 cores (fp32), 7 of them the smallcnn surrogate (3 epochs at 128 px + crafting).
SMOKE = ExplainSettings(
    attack="pgd:eps=2/255,steps=3", limit=24, n_boot=500, figure_per_class=1, surrogate_epochs=1
)
QUICK = ExplainSettings()


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _summaries(values: np.ndarray, labels: np.ndarray, outcome: np.ndarray, classes, seed, n_boot) -> dict:
    return {
        "all": bootstrap_mean(values, seed=seed, n_boot=n_boot),
        "per_class": {
            c: bootstrap_mean(values[labels == i], seed=seed, n_boot=n_boot) for i, c in enumerate(classes)
        },
        "by_outcome": {o: bootstrap_mean(values[outcome == o], seed=seed, n_boot=n_boot) for o in OUTCOMES},
    }


def _outcomes(y: torch.Tensor, clean_pred: torch.Tensor, adv_pred: torch.Tensor) -> np.ndarray:
    clean_ok, adv_ok = (clean_pred == y).numpy(), (adv_pred == y).numpy()
    return np.where(~clean_ok, "clean_error", np.where(adv_ok, "resisted", "fooled"))


def _acc(pred: torch.Tensor, y: torch.Tensor) -> dict:
    k, n = int((pred == y).sum()), len(y)
    return {"accuracy": k / n, "accuracy_ci": interval_or_none(k, n), "correct": k, "n": n}


def _fmt(summary: dict) -> str:
    if summary.get("mean") is None:
        return "n/a"
    ci = summary.get("ci")
    return f"{summary['mean']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def _fmt_diff(summary: dict) -> str:
    if summary.get("mean") is None:
        return "n/a"
    ci = summary.get("ci")
    return f"{summary['mean']:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")


def verdict(models: dict, paired: dict | None, top_fraction: float) -> str | None:
    """The answer to "does adversarial training keep attention under attack?", from the intervals."""
    if paired is None:
        return None
    d = paired["top_overlap"]["all"]
    top = f"top-{100 * top_fraction:g}% overlap"
    if d.get("ci") is None:
        answer = "too few images with non-constant maps to tell"
    elif d["ci"][0] > 0:
        answer = "adversarial training keeps attention closer to where it was on the clean scan"
    elif d["ci"][1] < 0:
        answer = "the adversarially trained model's attention moves more under attack than the normal model's"
    else:
        answer = (
            "no clear difference in attention shift between the two models (the paired interval covers 0)"
        )
    adv, nor = models["adversarial"], models["normal"]
    return (
        f"{answer}: {top} {_fmt(adv['top_overlap']['all'])} (adversarial) vs "
        f"{_fmt(nor['top_overlap']['all'])} (normal), paired difference {_fmt_diff(d)}; rank correlation "
        f"{_fmt(adv['rank_correlation']['all'])} vs {_fmt(nor['rank_correlation']['all'])}, "
        f"paired difference {_fmt_diff(paired['rank_correlation']['all'])}."
        + _same_class_sentence(paired, top)
    )


def _same_class_sentence(paired: dict, top: str) -> str:
    same = paired["top_overlap"].get("both_resisted")
    if not same or same.get("mean") is None:
        return ""
    return (
        f" On the {same['n']} images both models classified correctly before and after the attack (both maps "
        f"explain the true class), {top} {_fmt(same['adversarial'])} vs {_fmt(same['normal'])}, "
        f"paired difference {_fmt_diff(same)}; rank correlation paired difference "
        f"{_fmt_diff(paired['rank_correlation']['both_resisted'])}."
    )


def _paired(normal: dict, adversarial: dict, labels: np.ndarray, classes: list[str], settings) -> dict:
    """Adversarial minus normal model per test image: overall, per class, and on the images both models
    got right before and after the attack (there both maps explain the true class, so a difference is a
    move of attention, not a change of the class being explained)."""
    both = (normal["outcome"] == "resisted") & (adversarial["outcome"] == "resisted")
    kw = dict(seed=settings.seed, n_boot=settings.n_boot)
    out = {}
    for key, name in (("rho", "rank_correlation"), ("ovl", "top_overlap")):
        a, b = normal[key], adversarial[key]
        out[name] = {
            "all": paired_difference(a, b, **kw),
            "per_class": {
                c: paired_difference(a[labels == i], b[labels == i], **kw) for i, c in enumerate(classes)
            },
            "both_resisted": {
                **paired_difference(a[both], b[both], **kw),
                "normal": bootstrap_mean(a[both], **kw),
                "adversarial": bootstrap_mean(b[both], **kw),
            },
        }
    return out


def _figure_indices(labels: np.ndarray, clean_ok: np.ndarray, num_classes: int, per_class: int) -> list[int]:
    """The first `per_class` test images of each class that every model gets right on the clean scan (so
    the figure shows what the attack changes), topped up with others; the same images in every figure."""
    rows = []
    for c in range(num_classes):
        ranked = sorted(np.flatnonzero(labels == c), key=lambda i: (not clean_ok[i], i))
        rows += [int(i) for i in ranked[:per_class]]
    return rows


def run_explain(
    normal_checkpoint: str | Path | None,
    adversarial_checkpoint: str | Path | None,
    *,
    data: str | Path,
    split: str | Path | None = None,
    out_dir: str | Path,
    settings: ExplainSettings | None = None,
    runtime: Runtime | None = None,
    progress: bool = False,
) -> dict:
    """Explain the normal and the adversarial model (either may be None); returns explain.json's dict."""
    checkpoints = {
        label: path
        for label, path in (("normal", normal_checkpoint), ("adversarial", adversarial_checkpoint))
        if path is not None
    }
    return explain_checkpoints(
        checkpoints,
        data=data,
        split=split,
        out_dir=out_dir,
        settings=settings,
        runtime=runtime,
        progress=progress,
    )


def explain_checkpoints(
    checkpoints: dict[str, str | Path],
    *,
    data: str | Path,
    split: str | Path | None = None,
    out_dir: str | Path,
    settings: ExplainSettings | None = None,
    runtime: Runtime | None = None,
    progress: bool = False,
) -> dict:
    """`run_explain` for any labelled checkpoints ({"normal": ..., "adversarial": ...} or one of them)."""
    started = time.perf_counter()
    settings = (settings or ExplainSettings()).validate()
    if not checkpoints:
        raise ConfigError("give at least one checkpoint to explain")
    for path in checkpoints.values():
        check_checkpoint_path(path)
    spec = parse_spec(settings.attack)
    runtime = runtime or Runtime.resolve()
    fp32 = replace(runtime, precision="fp32")  # predictions and CAMs in fp32 whatever the attacks ran in
    out = Path(out_dir)
    seconds: dict[str, float] = {}

    t = time.perf_counter()
    models, infos = {}, {}
    for label, path in checkpoints.items():
        model, info = open_checkpoint(path)
        models[label], infos[label] = runtime.prepare_model(model).eval(), info
    first = next(iter(checkpoints))
    for label, info in infos.items():
        for key in ("classes", "image_size"):
            if info.get(key) != infos[first].get(key):
                raise CheckpointError(
                    f"{label} and {first} checkpoints differ in {key}: "
                    f"{info.get(key)!r} vs {infos[first].get(key)!r}"
                )
    test = open_test_set(
        data, infos[first], checkpoints[first], split=split, limit=settings.limit, progress=progress
    )
    ds = test.dataset
    classes, size = list(ds.classes), int(infos[first]["image_size"])
    x, y = ds.tensors()
    labels = y.numpy()
    seconds["load"] = time.perf_counter() - t

    per_model: dict[str, dict] = {}
    held: dict[str, dict] = {}  # tensors for figures and transfer, never written
    with progress_bars(progress) as start:
        for label, model in models.items():
            arch = infos[label]["model"]
            layer = target_layer(model, arch, size)
            t = time.perf_counter()
            clean_pred, clean_prob = predict(model, x, fp32, settings.batch_size)
            seed_everything(settings.seed)
            x_adv = attack_dataset(
                spec, model, x, y, runtime, settings.batch_size, start(f"explain: {label} {spec}", len(x))
            )
            adv_pred, adv_prob = predict(model, x_adv, fp32, settings.batch_size)
            t_attack = time.perf_counter() - t
            t = time.perf_counter()
            if settings.target == "predicted":
                target_clean, target_adv = clean_pred, adv_pred
            else:
                target_clean = target_adv = y
            kw = dict(layer=layer, method=settings.method, batch_size=settings.batch_size)
            cam_clean = class_activation_maps(model, x, target_clean, **kw)
            cam_adv = class_activation_maps(model, x_adv, target_adv, **kw)
            t_cam = time.perf_counter() - t
            t = time.perf_counter()
            rho, ovl = shift_metrics(cam_clean, cam_adv, grid=settings.grid, fraction=settings.top_fraction)
            outcome = _outcomes(y, clean_pred, adv_pred)
            stats = dict(classes=classes, seed=settings.seed, n_boot=settings.n_boot)
            clean_conf = clean_prob.gather(1, clean_pred[:, None])[:, 0]
            adv_conf = adv_prob.gather(1, adv_pred[:, None])[:, 0]
            per_model[label] = {
                "checkpoint": str(checkpoints[label]),
                "model": arch,
                "mode": infos[label].get("mode"),
                "target_layer": layer.name,
                "cam_grid": list(layer.grid),
                "clean": _acc(clean_pred, y),
                "adversarial": _acc(adv_pred, y),
                "outcome_counts": {o: int((outcome == o).sum()) for o in OUTCOMES},
                "degenerate_maps": {
                    "clean": int(sum(np.ptp(m) == 0 for m in cam_clean)),
                    "adversarial": int(sum(np.ptp(m) == 0 for m in cam_adv)),
                },
                "rank_correlation": _summaries(rho, labels, outcome, **stats),
                "top_overlap": _summaries(ovl, labels, outcome, **stats),
                "per_image": {
                    "clean_pred": clean_pred.tolist(),
                    "clean_confidence": [round(float(v), 5) for v in clean_conf],
                    "adv_pred": adv_pred.tolist(),
                    "adv_confidence": [round(float(v), 5) for v in adv_conf],
                    "outcome": outcome.tolist(),
                    "rank_correlation": [None if math.isnan(v) else round(float(v), 5) for v in rho],
                    "top_overlap": [None if math.isnan(v) else round(float(v), 5) for v in ovl],
                },
                "seconds": {"attack": t_attack, "cam": t_cam, "metrics": time.perf_counter() - t},
            }
            held[label] = dict(
                x_adv=x_adv, cam_clean=cam_clean, cam_adv=cam_adv, rho=rho, ovl=ovl,
                clean_pred=clean_pred, adv_pred=adv_pred, clean_conf=clean_conf, adv_conf=adv_conf,
                outcome=outcome,
            )  # fmt: skip

        paired = None
        if "normal" in held and "adversarial" in held:
            paired = _paired(held["normal"], held["adversarial"], labels, classes, settings)

        t = time.perf_counter()
        figures = {}
        clean_ok = np.all([(h["clean_pred"] == y).numpy() for h in held.values()], axis=0)
        rows = _figure_indices(labels, clean_ok, len(classes), settings.figure_per_class)
        if rows:
            gray = x[rows, 0].numpy()
            for label, h in held.items():
                path = out / "figures" / f"explain-{label}.png"
                explain_figure(
                    path,
                    title=(
                        f"{label} model ({per_model[label]['model']}, {per_model[label]['mode']}): "
                        f"{spec}, {settings.method} at {per_model[label]['target_layer']}, "
                        f"target = {settings.target} class"
                    ),
                    clean=gray,
                    adv=h["x_adv"][rows, 0].numpy(),
                    cam_clean=h["cam_clean"][rows],
                    cam_adv=h["cam_adv"][rows],
                    labels=[classes[labels[i]] for i in rows],
                    clean_pred=[classes[int(h["clean_pred"][i])] for i in rows],
                    clean_conf=[float(h["clean_conf"][i]) for i in rows],
                    adv_pred=[classes[int(h["adv_pred"][i])] for i in rows],
                    adv_conf=[float(h["adv_conf"][i]) for i in rows],
                    amplify=settings.amplify,
                )
                figures[label] = str(path.relative_to(out))
        seconds["figures"] = time.perf_counter() - t

        transfer = None
        if settings.surrogate != "none":
            t = time.perf_counter()
            sur_path, sur_info = train_surrogate(
                settings.surrogate,
                data=data,
                manifest=test.manifest,
                image_size=size,
                run_dir=out / f"surrogate-{settings.surrogate}",
                epochs=settings.surrogate_epochs,
                lr=settings.surrogate_lr,
                batch_size=settings.surrogate_batch_size,
                limit_per_class=settings.surrogate_limit_per_class,
                seed=settings.seed,
                runtime=runtime,
                progress=progress,
            )
            seconds["surrogate_training"] = time.perf_counter() - t
            surrogate, _ = open_checkpoint(sur_path)
            surrogate = runtime.prepare_model(surrogate).eval()
            transfer = transfer_to_targets(
                surrogate,
                x,
                y,
                spec=spec,
                targets={label: (models[label], held[label]["x_adv"]) for label in models},
                runtime=runtime,
                batch_size=settings.batch_size,
                seed=settings.seed,
                advance=start(f"explain: craft {spec} on surrogate {settings.surrogate}", len(x)),
            )
            transfer.pop("x_src")
            transfer["surrogate"] = sur_info
            seconds["transfer"] = time.perf_counter() - t - seconds["surrogate_training"]

    for label in per_model:
        for part, s in per_model[label]["seconds"].items():
            seconds[f"{label}_{part}"] = s
    total = time.perf_counter() - started
    tm = spec.threat_model()
    payload = {
        "format": FORMAT,
        "created": _now(),
        "checkpoints": {label: str(p) for label, p in checkpoints.items()},
        "data": {
            "data": str(data),
            "manifest": test.manifest,
            "n": len(ds),
            "limit": settings.limit,
            "image_size": size,
            "classes": classes,
            "synthetic": bool(ds.synthetic),
            "paths": list(ds.paths),
            "labels": labels.tolist(),
        },
        "settings": settings.to_dict(),
        "attack": {
            "spec": str(spec),
            "threat_model": {"norm": tm.norm, "eps": tm.eps},
            "precision": runtime.precision,
            "seed": settings.seed,
            "run_on": "each model itself (white-box), every step (no early stop unless the spec says so)",
        },
        "cam": {
            "method": settings.method,
            "package": "grad-cam (pytorch_grad_cam) " + METHODS[settings.method].__name__,
            "target": settings.target,
            "target_meaning": (
                "each map explains the class the model predicts for that very image (clean or adversarial)"
                if settings.target == "predicted"
                else "both maps explain the true class"
            ),
            "precision": "fp32 (autocast off): bf16 gradients quantize the channel weights coarsely",
            "layers": {label: per_model[label]["target_layer"] for label in per_model},
            "grid": settings.grid,
            "top_fraction": settings.top_fraction,
            "rank_correlation": "Spearman rho (scipy.stats.spearmanr) over the cells of both maps, "
            f"area-averaged to at most {settings.grid}x{settings.grid}",
            "top_overlap": f"share of the clean map's top {100 * settings.top_fraction:g}% cells (ties at "
            "the threshold included) that are also top cells of the adversarial map; IoU = o / (2 - o)",
            "interval": f"95% percentile bootstrap over images, {settings.n_boot} resamples, "
            f"seed {settings.seed}",
            "outcomes": "fooled: right on clean, wrong under attack; resisted: right on both; "
            "clean_error: wrong on the clean image",
            "paired_difference": "adversarial model minus normal model per test image, bootstrap over images",
        },
        "models": per_model,
        "paired": paired,
        "verdict": verdict(per_model, paired, settings.top_fraction),
        "figures": figures,
        "figure_images": [ds.paths[i] for i in rows],
        "transfer": transfer,
        "runtime": runtime.describe(),
        "seconds": {**seconds, "total": total},
        "seconds_per_image": total / len(ds),
    }
    write_json(out / "explain.json", payload)
    return payload
