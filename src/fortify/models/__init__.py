"""fortify.models: classifiers over [0,1] pixels, normalization as the first layer."""

from fortify.models.normalize import Normalize
from fortify.models.registry import build_model, fold_rgb_conv, list_models

__all__ = ["Normalize", "build_model", "fold_rgb_conv", "list_models"]
