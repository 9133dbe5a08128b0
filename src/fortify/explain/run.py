"""`run_explain`: what a white-box attack changes in each model's attention, in numbers and figures,
and how well attacks crafted on another architecture transfer to the models.

Per model: clean and PGD-adversarial predictions (scored in fp32), a CAM of the clean and of the
adversarial image, the attention shift between the two per image (explain/shift.py), its mean
with a bootstrap interval overall, per class and per attack outcome, and, for the normal and
adversarial model together, the paired difference on the same test images. Writes
`out_dir/explain.json` (atomically, at the very end) and `out_dir/figures/explain-<model>.png`.

The files: settings.py (the budgets), maps.py (each model attacked and mapped), summaries.py (the
bootstrap summaries and the verdict), crossarch.py (the surrogate and transfer), records.py (explain.json).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from fortify.errors import ConfigError
from fortify.evaluation.loading import check_checkpoint_path, open_checkpoint
from fortify.explain.cam_file import FILE as CAMS
from fortify.explain.cam_file import write_cams
from fortify.explain.crossarch import train_surrogate, transfer_to_targets
from fortify.explain.maps import Explained, Inputs, explain_model, load_inputs
from fortify.explain.records import explain_payload
from fortify.explain.settings import ExplainSettings
from fortify.explain.summaries import paired_summaries
from fortify.fileio import write_json
from fortify.progress import tasks as progress_tasks
from fortify.report.figures.explain import explain_figure
from fortify.runtime import Runtime


def run_explain(
    normal_checkpoint: str | Path | None,
    adversarial_checkpoint: str | Path | None = None,
    *,
    data: str | Path,
    split: str | Path | None = None,
    out_dir: str | Path,
    settings: ExplainSettings | dict | None = None,
    runtime: Runtime | None = None,
    progress: bool = False,
    cache_dir: str | Path | None = None,
    resume: bool = False,
) -> dict:
    """Explain the normal and the adversarial model (either may be None); returns explain.json's dict.

    `resume` is there for the call shape every extra shares: explain keeps no partial state (its surrogate
    run is reused whenever it holds the same training run)."""
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
        cache_dir=cache_dir,
        resume=resume,
    )


def explain_checkpoints(
    checkpoints: dict[str, str | Path],
    *,
    data: str | Path,
    split: str | Path | None = None,
    out_dir: str | Path,
    settings: ExplainSettings | dict | None = None,
    runtime: Runtime | None = None,
    progress: bool = False,
    cache_dir: str | Path | None = None,
    resume: bool = False,
) -> dict:
    """`run_explain` for any labelled checkpoints ({"normal": ..., "adversarial": ...} or one of them)."""
    started = time.perf_counter()
    if isinstance(settings, ExplainSettings):
        settings = settings.validate()
    else:
        settings = ExplainSettings.from_dict(settings)
    if not checkpoints:
        raise ConfigError("give at least one checkpoint to explain")
    for path in checkpoints.values():
        check_checkpoint_path(path)
    spec = settings.attack
    runtime = runtime or Runtime.resolve()
    out = Path(out_dir)
    t = time.perf_counter()
    inputs = load_inputs(checkpoints, data, split, settings, spec, runtime, progress, cache_dir)
    seconds: dict[str, float] = {"load": time.perf_counter() - t}

    per_model: dict[str, dict] = {}
    held: dict[str, Explained] = {}  # tensors for figures and transfer, never written
    with progress_tasks(progress) as start:
        for label, model in inputs.models.items():
            per_model[label], held[label] = explain_model(inputs, label, model, start)
        paired = None
        if "normal" in held and "adversarial" in held:
            # paired_summaries reads rho, ovl and outcome by key (its tests hand it plain dicts).
            normal, adversarial = vars(held["normal"]), vars(held["adversarial"])
            paired = paired_summaries(normal, adversarial, inputs.labels, inputs.classes, settings)

        t = time.perf_counter()
        figures = _figures(inputs, per_model, held, out)
        write_cams(out / CAMS, list(inputs.test.dataset.paths), held)  # the explorer's CAM thumbnails
        seconds["figures"] = time.perf_counter() - t

        transfer = None
        if settings.surrogate != "none":
            transfer, timings = _transfer(inputs, held, data, out, progress, start, cache_dir)
            seconds.update(timings)

    payload = explain_payload(inputs, data, per_model, paired, figures, transfer, seconds, started)
    write_json(out / "explain.json", payload)
    return payload


def figure_indices(labels: np.ndarray, clean_ok: np.ndarray, num_classes: int, per_class: int) -> list[int]:
    """The first `per_class` test images of each class that every model gets right on the clean scan (so
    the figure shows what the attack changes), topped up with others; the same images in every figure."""
    rows = []
    for c in range(num_classes):
        ranked = sorted(np.flatnonzero(labels == c), key=lambda i: (not clean_ok[i], i))
        rows += [int(i) for i in ranked[:per_class]]
    return rows


def _figures(
    inputs: Inputs, per_model: dict[str, dict], held: dict[str, Explained], out: Path
) -> tuple[dict[str, str], list[int]]:
    """Draw each model's figure on the same test images: ({label: path under out}, the images' indices)."""
    settings, x, y, labels, classes = inputs.settings, inputs.x, inputs.y, inputs.labels, inputs.classes
    figures = {}
    clean_ok = np.all([(h.clean_pred == y).numpy() for h in held.values()], axis=0)
    rows = figure_indices(labels, clean_ok, len(classes), settings.figure_per_class)
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
    inputs: Inputs,
    held: dict[str, Explained],
    data: str | Path,
    out: Path,
    progress: bool,
    start,
    cache_dir: str | Path | None,
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
        cache_dir=cache_dir,
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
