"""The explain stage's figure, the study's Fig. 3-6 with CAMs: per image, clean scan, adversarial scan,
amplified perturbation, CAM on clean, CAM on adversarial, each titled with the predicted class and its
confidence; and `overlay`, the heat map of a CAM over a scan."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from pytorch_grad_cam.utils.image import show_cam_on_image

from fortify.report.figures.png import save_png

COLUMNS = ("clean", "adversarial", "perturbation", "CAM clean", "CAM adversarial")


def explain_figure(
    path: Path,
    *,
    title: str,
    clean: np.ndarray,  # K x H x W in [0,1]
    adv: np.ndarray,
    cam_clean: np.ndarray,
    cam_adv: np.ndarray,
    labels: list[str],  # true class per row
    clean_pred: list[str],
    clean_conf: list[float],
    adv_pred: list[str],
    adv_conf: list[float],
    amplify: float,
) -> Path:
    rows = len(clean)
    fig = Figure(figsize=(2.3 * len(COLUMNS), 2.45 * rows + 0.6))
    axes = fig.subplots(rows, len(COLUMNS), squeeze=False)
    for i in range(rows):
        # Perturbation shown as 0.5 + amplify * delta: mid-gray is "unchanged".
        delta = np.clip(0.5 + amplify * (adv[i] - clean[i]), 0.0, 1.0)
        clean_wrong, adv_wrong = clean_pred[i] != labels[i], adv_pred[i] != labels[i]
        panels = [
            (clean[i], "gray", f"true {labels[i]}\npred {clean_pred[i]} {clean_conf[i]:.0%}", clean_wrong),
            (adv[i], "gray", f"adversarial\npred {adv_pred[i]} {adv_conf[i]:.0%}", adv_wrong),
            (delta, "gray", f"perturbation x{amplify:g}", False),
            (overlay(clean[i], cam_clean[i]), None, f"CAM clean\npred {clean_pred[i]}", clean_wrong),
            (overlay(adv[i], cam_adv[i]), None, f"CAM adversarial\npred {adv_pred[i]}", adv_wrong),
        ]
        for ax, (img, cmap, text, wrong) in zip(axes[i], panels, strict=True):
            ax.imshow(img, cmap=cmap, vmin=0.0, vmax=1.0) if cmap else ax.imshow(img)
            ax.set_title(text, fontsize=8, color="crimson" if wrong else "black")  # red: wrong class
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
    return save_png(fig, path, tight=False, dpi=80)


def overlay(gray: np.ndarray, cam: np.ndarray, image_weight: float = 0.5) -> np.ndarray:
    """uint8 RGB heat map over a grayscale image in [0,1] (the package's overlay expects RGB floats)."""
    rgb = np.repeat(np.clip(gray, 0.0, 1.0)[..., None], 3, axis=-1).astype(np.float32)
    return show_cam_on_image(rgb, cam.astype(np.float32), use_rgb=True, image_weight=image_weight)
