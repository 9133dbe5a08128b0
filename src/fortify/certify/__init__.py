"""fortify.certify: randomized-smoothing certification (Cohen, Rosenfeld & Kolter 2019).

- `smoothed_counts`, `certify`, `predict_from_counts`: votes under Gaussian noise, CERTIFY, PREDICT
- `smoothed_pgd`: SmoothAdv-style L2 PGD on the smoothed classifier (Salman et al. 2019), the empirical check
- `run_certify(normal, adversarial, *, data, split, out_dir, settings, runtime, progress, cache_dir,
  resume)` -> certify.json: noise fine-tuning, certified accuracy vs L2 radius, abstain rate, per class,
  the L-inf threat model's L2 radii, empirical accuracy under attack, the consistency sanity check, cost
  per image; in work units, resumable and shared out under torchrun (settings.py, finetune.py, images.py,
  run.py; the figure in fortify.report.figures.certify)
- `CertifySettings` (presets smoke and quick: `CertifySettings.preset("smoke")`)
"""

from fortify.certify.attack import smoothed_pgd
from fortify.certify.run import run_certify, threat_radii
from fortify.certify.settings import CertifySettings
from fortify.certify.smoothing import (
    ABSTAIN,
    Certificate,
    certify,
    certify_from_counts,
    lower_confidence_bound,
    max_certifiable_radius,
    predict_from_counts,
    radius_from_bound,
    smoothed_counts,
)

__all__ = [
    "ABSTAIN",
    "Certificate",
    "CertifySettings",
    "certify",
    "certify_from_counts",
    "lower_confidence_bound",
    "max_certifiable_radius",
    "predict_from_counts",
    "radius_from_bound",
    "run_certify",
    "smoothed_counts",
    "smoothed_pgd",
    "threat_radii",
]
