"""fortify: adversarial robustness for medical image classifiers, measured honestly."""

__version__ = "0.1.0"


import importlib

# The packages `fortify.<name>` reaches after a plain `import fortify` (imported on first use, so that
# `import fortify` alone stays light: no torch until something needs it).
PACKAGES = (
    "attacks",
    "certify",
    "data",
    "detect",
    "evaluation",
    "explain",
    "models",
    "pipeline",
    "report",
    "training",
)


def __getattr__(name: str):
    # `fortify.evaluate(model, data)` without making `import fortify` load torch and the evaluation stack.
    if name == "evaluate":
        from fortify.evaluation.any_model import evaluate_model

        return evaluate_model
    if name in PACKAGES:  # `fortify.evaluation.EvalSettings` after `import fortify`
        return importlib.import_module(f"fortify.{name}")
    raise AttributeError(f"module 'fortify' has no attribute {name!r}")
