"""fortify.explain: what an attack changes in a model's attention (in numbers); cross-architecture transfer.

- `class_activation_maps`, `target_layer`, `METHODS`, `TARGET_LAYERS`: CAMs via the grad-cam package
- `rank_correlation`, `top_overlap`, `shift_metrics`, `bootstrap_mean`, `paired_difference`
- `run_explain(normal, adversarial, ...)` -> explain.json + figures; `ExplainSettings` (presets smoke, quick)
- `overlay`: a CAM over a scan (drawn with the figures, in fortify.report.figures.explain)
"""

from fortify.explain.cam import METHODS, TARGET_LAYERS, TargetLayer, class_activation_maps, target_layer
from fortify.explain.run import explain_checkpoints, run_explain
from fortify.explain.settings import ExplainSettings
from fortify.explain.shift import (
    bootstrap_mean,
    paired_difference,
    rank_correlation,
    shift_metrics,
    top_overlap,
)
from fortify.report.figures.explain import overlay

__all__ = [
    "METHODS",
    "TARGET_LAYERS",
    "ExplainSettings",
    "TargetLayer",
    "bootstrap_mean",
    "class_activation_maps",
    "explain_checkpoints",
    "overlay",
    "paired_difference",
    "rank_correlation",
    "run_explain",
    "shift_metrics",
    "target_layer",
    "top_overlap",
]
