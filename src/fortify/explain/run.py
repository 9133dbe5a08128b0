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

from fortify.attacks import AttackSpec, parse_spec
from fortify.errors import CheckpointError, ConfigError
from fortify.evaluation.batches import attack_dataset, predict
from fortify.evaluation.inputs import TestSet, check_checkpoint_path, open_checkpoint, open_test_set
from fortify.explain.cam import METHODS, TargetLayer, check_method, class_activation_maps, target_layer
from fortify.explain.crossarch import train_surrogate, transfer_to_targets
from fortify.explain.figures import explain_figure
from fortify.explain.shift import bootstrap_mean, paired_difference, shift_metrics
from fortify.fileio import write_json
from fortify.intervals import interval_or_none
from fortify.models import list_models
from fortify.progress import tasks as progress_tasks
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
    out = Path(out_dir)
    t = time.perf_counter()
    inputs = _load(checkpoints, data, split, settings, spec, runtime, progress)
    seconds: dict[str, float] = {"load": time.perf_counter() - t}

    per_model: dict[str, dict] = {}
    held: dict[str, _Explained] = {}  # tensors for figures and transfer, never written
    with progress_tasks(progress) as start:
        for label, model in inputs.models.items():
            per_model[label], held[label] = _explain_model(inputs, label, model, start)

        paired = None
        if "normal" in held and "adversarial" in held:
            # _paired reads rho, ovl and outcome by key (its tests hand it plain dicts).
            normal, adversarial = vars(held["normal"]), vars(held["adversarial"])
            paired = _paired(normal, adversarial, inputs.labels, inputs.classes, settings)

        t = time.perf_counter()
        figures, rows = _figures(inputs, per_model, held, out)
        seconds["figures"] = time.perf_counter() - t

        transfer = None
        if settings.surrogate != "none":
            transfer, timings = _transfer(inputs, held, data=data, out=out, progress=progress, start=start)
            seconds.update(timings)

    for label in per_model:
        for part, s in per_model[label]["seconds"].items():
            seconds[f"{label}_{part}"] = s
    total = time.perf_counter() - started
    ds = inputs.test.dataset
    payload = {
        "format": FORMAT,
        "created": _now(),
        "checkpoints": {label: str(p) for label, p in checkpoints.items()},
        "data": _data_record(inputs, data),
        "settings": settings.to_dict(),
        "attack": _attack_record(inputs),
        "cam": _cam_record(settings, per_model),
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


@dataclass
class _Inputs:
    """The labelled models and their common test set, loaded once for every step of an explanation."""

    checkpoints: dict[str, str | Path]
    models: dict[str, torch.nn.Module]  # prepared for the runtime, in eval mode
    infos: dict[str, dict]  # each checkpoint's record
    test: TestSet
    x: torch.Tensor
    y: torch.Tensor
    labels: np.ndarray  # y as numpy
    classes: list[str]
    size: int  # image size, the same for every checkpoint
    spec: AttackSpec
    settings: ExplainSettings
    runtime: Runtime  # attacks run here
    fp32: Runtime  # predictions and CAMs in fp32 whatever the attacks ran in


def _load(
    checkpoints: dict[str, str | Path],
    data: str | Path,
    split: str | Path | None,
    settings: ExplainSettings,
    spec: AttackSpec,
    runtime: Runtime,
    progress: bool,
) -> _Inputs:
    """Open every checkpoint, check they agree on classes and image size, and load the test split."""
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
    x, y = test.dataset.tensors()
    return _Inputs(
        checkpoints=checkpoints,
        models=models,
        infos=infos,
        test=test,
        x=x,
        y=y,
        labels=y.numpy(),
        classes=list(test.dataset.classes),
        size=int(infos[first]["image_size"]),
        spec=spec,
        settings=settings,
        runtime=runtime,
        fp32=replace(runtime, precision="fp32"),
    )


@dataclass
class _Explained:
    """One model under the attack, per test image: what the figures, the pairing and transfer read."""

    x_adv: torch.Tensor
    cam_clean: np.ndarray  # N x H x W maps of the clean images
    cam_adv: np.ndarray  # ... and of the adversarial ones
    rho: np.ndarray  # rank correlation of the two maps
    ovl: np.ndarray  # top overlap of the two maps
    clean_pred: torch.Tensor
    adv_pred: torch.Tensor
    clean_conf: torch.Tensor  # the probability of the predicted class
    adv_conf: torch.Tensor
    outcome: np.ndarray  # fooled | resisted | clean_error


def _explain_model(inputs: _Inputs, label: str, model: torch.nn.Module, start) -> tuple[dict, _Explained]:
    """Attack one model, map its attention on the clean and adversarial images, measure the shift."""
    settings, x, y = inputs.settings, inputs.x, inputs.y
    layer = target_layer(model, inputs.infos[label]["model"], inputs.size)
    t = time.perf_counter()
    clean_pred, clean_prob = predict(model, x, inputs.fp32, settings.batch_size)
    seed_everything(settings.seed)
    advance = start(f"explain: {label} {inputs.spec}", len(x))
    x_adv = attack_dataset(inputs.spec, model, x, y, inputs.runtime, settings.batch_size, advance)
    adv_pred, adv_prob = predict(model, x_adv, inputs.fp32, settings.batch_size)
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
    held = _Explained(
        x_adv=x_adv,
        cam_clean=cam_clean,
        cam_adv=cam_adv,
        rho=rho,
        ovl=ovl,
        clean_pred=clean_pred,
        adv_pred=adv_pred,
        clean_conf=clean_prob.gather(1, clean_pred[:, None])[:, 0],
        adv_conf=adv_prob.gather(1, adv_pred[:, None])[:, 0],
        outcome=_outcomes(y, clean_pred, adv_pred),
    )
    entry = _model_entry(inputs, label, layer, held)
    entry["seconds"] = {"attack": t_attack, "cam": t_cam, "metrics": time.perf_counter() - t}
    return entry, held


def _model_entry(inputs: _Inputs, label: str, layer: TargetLayer, held: _Explained) -> dict:
    """explain.json's entry for one model: accuracies, outcomes, shift summaries and per-image values."""
    settings, y, outcome = inputs.settings, inputs.y, held.outcome
    stats = dict(classes=inputs.classes, seed=settings.seed, n_boot=settings.n_boot)
    return {
        "checkpoint": str(inputs.checkpoints[label]),
        "model": inputs.infos[label]["model"],
        "mode": inputs.infos[label].get("mode"),
        "target_layer": layer.name,
        "cam_grid": list(layer.grid),
        "clean": _acc(held.clean_pred, y),
        "adversarial": _acc(held.adv_pred, y),
        "outcome_counts": {o: int((outcome == o).sum()) for o in OUTCOMES},
        "degenerate_maps": {
            "clean": int(sum(np.ptp(m) == 0 for m in held.cam_clean)),
            "adversarial": int(sum(np.ptp(m) == 0 for m in held.cam_adv)),
        },
        "rank_correlation": _summaries(held.rho, inputs.labels, outcome, **stats),
        "top_overlap": _summaries(held.ovl, inputs.labels, outcome, **stats),
        "per_image": {
            "clean_pred": held.clean_pred.tolist(),
            "clean_confidence": [round(float(v), 5) for v in held.clean_conf],
            "adv_pred": held.adv_pred.tolist(),
            "adv_confidence": [round(float(v), 5) for v in held.adv_conf],
            "outcome": outcome.tolist(),
            "rank_correlation": [None if math.isnan(v) else round(float(v), 5) for v in held.rho],
            "top_overlap": [None if math.isnan(v) else round(float(v), 5) for v in held.ovl],
        },
    }


def _figures(
    inputs: _Inputs, per_model: dict[str, dict], held: dict[str, _Explained], out: Path
) -> tuple[dict[str, str], list[int]]:
    """Draw each model's figure on the same test images: ({label: path under out}, the images' indices)."""
    settings, x, y, labels, classes = inputs.settings, inputs.x, inputs.y, inputs.labels, inputs.classes
    figures = {}
    clean_ok = np.all([(h.clean_pred == y).numpy() for h in held.values()], axis=0)
    rows = _figure_indices(labels, clean_ok, len(classes), settings.figure_per_class)
    if not rows:
        return figures, rows
    gray = x[rows, 0].numpy()
    for label, h in held.items():
        path = out / "figures" / f"explain-{label}.png"
        explain_figure(
            path,
            title=(
                f"{label} model ({per_model[label]['model']}, {per_model[label]['mode']}): "
                f"{inputs.spec}, {settings.method} at {per_model[label]['target_layer']}, "
                f"target = {settings.target} class"
            ),
            clean=gray,
            adv=h.x_adv[rows, 0].numpy(),
            cam_clean=h.cam_clean[rows],
            cam_adv=h.cam_adv[rows],
            labels=[classes[labels[i]] for i in rows],
            clean_pred=[classes[int(h.clean_pred[i])] for i in rows],
            clean_conf=[float(h.clean_conf[i]) for i in rows],
            adv_pred=[classes[int(h.adv_pred[i])] for i in rows],
            adv_conf=[float(h.adv_conf[i]) for i in rows],
            amplify=settings.amplify,
        )
        figures[label] = str(path.relative_to(out))
    return figures, rows


def _transfer(
    inputs: _Inputs,
    held: dict[str, _Explained],
    *,
    data: str | Path,
    out: Path,
    progress: bool,
    start,
) -> tuple[dict, dict[str, float]]:
    """Train the surrogate and transfer the attack crafted on it to every model: (results, seconds)."""
    settings, spec, runtime = inputs.settings, inputs.spec, inputs.runtime
    t = time.perf_counter()
    sur_path, sur_info = train_surrogate(
        settings.surrogate,
        data=data,
        manifest=inputs.test.manifest,
        image_size=inputs.size,
        run_dir=out / f"surrogate-{settings.surrogate}",
        epochs=settings.surrogate_epochs,
        lr=settings.surrogate_lr,
        batch_size=settings.surrogate_batch_size,
        limit_per_class=settings.surrogate_limit_per_class,
        seed=settings.seed,
        runtime=runtime,
        progress=progress,
    )
    training = time.perf_counter() - t
    surrogate, _ = open_checkpoint(sur_path)
    surrogate = runtime.prepare_model(surrogate).eval()
    transfer = transfer_to_targets(
        surrogate,
        inputs.x,
        inputs.y,
        spec=spec,
        targets={label: (model, held[label].x_adv) for label, model in inputs.models.items()},
        runtime=runtime,
        batch_size=settings.batch_size,
        seed=settings.seed,
        advance=start(f"explain: craft {spec} on surrogate {settings.surrogate}", len(inputs.x)),
    )
    transfer.pop("x_src")
    transfer["surrogate"] = sur_info
    return transfer, {"surrogate_training": training, "transfer": time.perf_counter() - t - training}


def _data_record(inputs: _Inputs, data: str | Path) -> dict:
    """explain.json's "data" block: the test images explained, in order, with their labels."""
    ds = inputs.test.dataset
    return {
        "data": str(data),
        "manifest": inputs.test.manifest,
        "n": len(ds),
        "limit": inputs.settings.limit,
        "image_size": inputs.size,
        "classes": inputs.classes,
        "synthetic": bool(ds.synthetic),
        "paths": list(ds.paths),
        "labels": inputs.labels.tolist(),
    }


def _attack_record(inputs: _Inputs) -> dict:
    """explain.json's "attack" block: the white-box attack run on each model."""
    tm = inputs.spec.threat_model()
    return {
        "spec": str(inputs.spec),
        "threat_model": {"norm": tm.norm, "eps": tm.eps},
        "precision": inputs.runtime.precision,
        "seed": inputs.settings.seed,
        "run_on": "each model itself (white-box), every step (no early stop unless the spec says so)",
    }


def _cam_record(settings: ExplainSettings, per_model: dict[str, dict]) -> dict:
    """explain.json's "cam" block: how the maps were made and what each number means."""
    return {
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
    }
