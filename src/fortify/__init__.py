"""fortify: adversarial robustness for medical image classifiers, measured honestly."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # `fortify.evaluate(model, data)` without making `import fortify` load torch and the evaluation stack.
    if name == "evaluate":
        from fortify.evaluation.any_model import evaluate_model

        return evaluate_model
    raise AttributeError(f"module 'fortify' has no attribute {name!r}")
