"""fortify: adversarial robustness for medical image classifiers, measured honestly."""

__version__ = "0.1.0"
