"""fortify.report.figures: every matplotlib drawing in fortify, each from numbers already computed.

- study.py: the report's figures of the study (confusion grids, accuracy vs eps, training curves, example
  scans), re-exported here
- explain.py: `explain_figure` (clean, adversarial, perturbation and CAMs per scan), `overlay`
- detect.py: the detect stage's score histograms and ROC curves, and the report's ROC figure
- certify.py: `certified_accuracy_figure` (certified and empirical accuracy vs L2 radius)

Object API on an Agg canvas (png.py): no global pyplot state, no display; each PNG written atomically.
The extras import their drawings from here, so the CLI's figure and the report's are one drawing.
"""

from fortify.report.figures.study import confusion_grid, eps_curves, example_scans, training_curves

__all__ = ["confusion_grid", "eps_curves", "example_scans", "training_curves"]
