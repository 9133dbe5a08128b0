"""fortify.detect: detecting adversarial inputs, judged against an attacker who knows the detector.

The Mahalanobis detector of Lee et al. (2018) on intermediate features of the classifier, fitted on
the training split with its threshold set on the validation split, evaluated on the test split
against FGSM, PGD, CW and an adaptive attack (Carlini & Wagner 2017; Tramer et al. 2020).

Files: settings.py (`DetectSettings`, presets smoke and quick), features.py and mahalanobis.py (the score),
detector.py (classifier + detector as one module), batches.py (batched passes), work.py (every attack in
work units: seeds per unit, out/units/, resume, torchrun sharding), fit.py (train and val), adaptive.py (the
attack that knows the detector), attack_units.py (the test split's attacks unit by unit), scoring.py (the
test split under attack, scored), run.py (`run_detect` -> detect.json; its figures are drawn by
fortify.report.figures.detect).
"""

from fortify.detect.adaptive import AdaptiveResult, adaptive_pgd
from fortify.detect.detector import Detector
from fortify.detect.features import DEFAULT_LAYERS, resolve_layers
from fortify.detect.fit import Fitted, fit_detector
from fortify.detect.mahalanobis import LayerGaussian, MahalanobisScore, fit_gaussian, fit_head
from fortify.detect.metrics import auroc, detection_metrics, threshold_at_fpr
from fortify.detect.run import detect_checkpoint, detect_on_splits, run_detect
from fortify.detect.settings import QUICK, SMOKE, DetectSettings

__all__ = [
    "DEFAULT_LAYERS",
    "QUICK",
    "SMOKE",
    "AdaptiveResult",
    "DetectSettings",
    "Detector",
    "Fitted",
    "LayerGaussian",
    "MahalanobisScore",
    "adaptive_pgd",
    "auroc",
    "detect_checkpoint",
    "detect_on_splits",
    "detection_metrics",
    "fit_detector",
    "fit_gaussian",
    "fit_head",
    "resolve_layers",
    "run_detect",
    "threshold_at_fpr",
]
