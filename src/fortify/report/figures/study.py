"""The report's figures of the study: confusion grids, accuracy vs eps, training curves, example scans.

Each function draws from numbers already in the run directory and writes one PNG atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from fortify.report.figures.png import save_png


def confusion_grid(
    panels: list[tuple[str, dict[str, Any]]], classes: list[str], title: str, path: Path
) -> Path:
    """One heatmap per (name, METRICS) panel: rows = true class, columns = predicted, counts annotated."""
    ncols = min(4, len(panels))
    nrows = -(-len(panels) // ncols)
    fig = Figure(figsize=(3.2 * ncols, 3.3 * nrows))
    grid = fig.subplots(nrows, ncols, squeeze=False)
    axes = list(grid.flat)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    for ax, (name, metrics) in zip(axes, panels, strict=False):
        cm = np.asarray(metrics.get("confusion") or [[0]], dtype=float)
        ax.imshow(cm, cmap="Blues", vmin=0, vmax=max(cm.max(), 1))
        for i in range(cm.shape[0]):
            for j in range(cm.shape[1]):
                color = "white" if cm[i, j] > 0.6 * cm.max() else "black"
                ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", color=color, fontsize=10)
        ax.set_xticks(range(len(classes)), classes, rotation=30, fontsize=8)
        ax.set_yticks(range(len(classes)), classes, fontsize=8)
        acc = metrics.get("accuracy")
        ax.set_title(f"{name}" + (f"\nacc {100 * acc:.1f}%" if acc is not None else ""), fontsize=9)
        ax.set_xlabel("predicted", fontsize=8)
    for row in grid:
        row[0].set_ylabel("true", fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save_png(fig, path)


def eps_curves(series: list[tuple[str, list[list[float]]]], norm: str, path: Path) -> Path:
    """Accuracy vs eps; eps shown in /255 units for L-inf (how the budgets are written)."""
    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.subplots()
    scale = 255.0 if norm == "linf" else 1.0
    for label, points in series:
        if not points:
            continue
        eps = [p[0] * scale for p in points]
        acc = [100 * p[1] for p in points]
        ax.plot(eps, acc, marker="o", label=label)
    ax.set_xlabel("eps (x/255, L-inf)" if norm == "linf" else f"eps ({norm})")
    ax.set_ylabel("accuracy on test split (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Accuracy vs attack budget")
    fig.tight_layout()
    return save_png(fig, path)


def training_curves(metrics: list[dict[str, Any]], title: str, path: Path) -> Path | None:
    """Losses on the left panel, accuracies on the right; whatever numeric keys training logged."""
    if not metrics:
        return None
    xs = [m.get("epoch", i + 1) for i, m in enumerate(metrics)]
    keys = sorted(
        {k for m in metrics for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    )
    loss_keys = [k for k in keys if "loss" in k]
    acc_keys = [k for k in keys if "acc" in k]
    if not loss_keys and not acc_keys:
        return None
    fig = Figure(figsize=(10, 3.6))
    ax_loss, ax_acc = fig.subplots(1, 2)
    for ax, group, ylabel in ((ax_loss, loss_keys, "loss"), (ax_acc, acc_keys, "accuracy")):
        for key in group:
            pts = [
                (x, m[key]) for x, m in zip(xs, metrics, strict=True) if isinstance(m.get(key), (int, float))
            ]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=key)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if group:
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save_png(fig, path)


def _pick_examples(labels: np.ndarray, per_class: int) -> list[int]:
    picked: list[int] = []
    for c in sorted(set(labels.tolist())):
        picked += [int(i) for i in np.flatnonzero(labels == c)[:per_class]]
    return picked


def _tile(img: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour upscale of a small scan so its pixels stay visible at report size."""
    k = max(1, -(-size // img.shape[0]))
    return np.kron(img, np.ones((k, k)))


# One tile of the mosaic: RGB, predicted class (None for a perturbation), its confidence, the title.
Cell = tuple[np.ndarray, int | None, float, str]


def _scan_cells(
    t: dict, clean: np.ndarray, i: int, attacks: list[str], size: int, clean_label: str
) -> list[Cell]:
    """One scan's row of the mosaic: the clean tile, then per attack the adversarial tile and its
    perturbation scaled to the full range (red = brighter, blue = darker)."""
    from matplotlib import colormaps

    gray, seismic = colormaps["gray"], colormaps["seismic"]
    img = clean[i, 0]
    cells: list[Cell] = [
        (gray(_tile(img, size))[..., :3], int(t["clean_pred"][i]), float(t["clean_conf"][i]), clean_label)
    ]
    for attack in attacks:
        adv = t[f"adv.{attack}"].float().numpy()[i, 0]
        delta = adv - img
        amp = float(np.abs(delta).max())
        cells.append(
            (
                gray(_tile(adv, size))[..., :3],
                int(t[f"pred.{attack}"][i]),
                float(t[f"conf.{attack}"][i]),
                attack,
            )
        )
        shown = delta / amp if amp > 0 else delta
        cells.append(
            (
                seismic((_tile(shown, size) + 1) / 2)[..., :3],
                None,
                0.0,
                f"{attack} perturbation\nx{1 / amp:.0f}" if amp > 0 else f"{attack}\nno change",
            )
        )
    return cells


def example_scans(
    examples_path: Path, attacks: list[str], classes: list[str], title: str, path: Path, per_class: int = 2
) -> Path | None:
    """Like the study's Fig. 3-6: per scan, the clean image, then per attack the adversarial image and the
    perturbation (amplified to the full range so it is visible; red = brighter, blue = darker), each titled
    with the predicted class and its confidence (red when wrong).

    Drawn as one mosaic image with text labels: one axes instead of dozens keeps this fast."""
    from safetensors.torch import load_file  # lazy: torch is heavy and only needed here

    t = load_file(str(examples_path))
    if "clean" not in t or "labels" not in t:
        return None
    clean = t["clean"].float().numpy()
    labels = t["labels"].long().numpy()
    attacks = [a for a in attacks if f"adv.{a}" in t]
    rows = _pick_examples(labels, per_class)
    if not rows:
        return None

    def name(k: int) -> str:
        return classes[k] if 0 <= k < len(classes) else str(k)

    size = max(96, clean.shape[-1])
    tile = _tile(clean[0, 0], size).shape[0]
    gap_x, gap_y = tile // 10, tile // 2  # room between tiles for two lines of title
    frame = max(1, tile // 48)
    ncols = 1 + 2 * len(attacks)
    height = len(rows) * (tile + gap_y) + gap_y // 2
    width = ncols * (tile + gap_x) + 2 * frame
    mosaic = np.ones((height, width, 3))
    labels_at: list[tuple[float, float, str, str]] = []
    for r, i in enumerate(rows):
        y0 = gap_y + r * (tile + gap_y)
        truth = int(labels[i])
        cells = _scan_cells(t, clean, i, attacks, size, f"true {name(truth)}\nclean")
        for c, (rgb, pred, conf, label) in enumerate(cells):
            x0 = frame + c * (tile + gap_x)
            # a gray frame, so an all-white tile (no perturbation) still reads as a tile
            mosaic[y0 - frame : y0 + tile + frame, x0 - frame : x0 + tile + frame] = 0.55
            mosaic[y0 : y0 + tile, x0 : x0 + tile] = rgb
            if pred is None:
                text, color = label, "black"
            else:
                text = f"{label}: {name(pred)} {100 * conf:.0f}%"
                color = "#b00020" if pred != truth else "black"
            labels_at.append((x0 + tile / 2, y0 - 4, text, color))
    # 1.5 inches per column; the height follows the mosaic's aspect, plus a strip for the title
    fig = Figure(figsize=(1.5 * ncols, 1.5 * ncols * height / width + 0.4))
    ax = fig.add_axes((0, 0, 1, 1 - 0.4 / fig.get_figheight()))
    ax.imshow(mosaic, interpolation="nearest")
    for x, y, text, color in labels_at:
        ax.text(x, y, text, ha="center", va="bottom", fontsize=6.5, color=color)
    ax.set_axis_off()
    fig.suptitle(title, fontsize=10, y=0.995)
    return save_png(fig, path, tight=False)
