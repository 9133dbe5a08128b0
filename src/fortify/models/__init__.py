"""fortify.models: classifiers over [0,1] pixels, normalization as the first layer; models from elsewhere
behind a checked input contract (`load_external_model`, `wrap_module`)."""

from fortify.models.class_bias import ClassBias, with_class_bias
from fortify.models.contract import ContractModel, InputContract, wrap_module
from fortify.models.external import load_external_model
from fortify.models.normalize import Normalize
from fortify.models.registry import build_model, fold_rgb_conv, is_model_name, list_models

__all__ = [
    "ClassBias",
    "ContractModel",
    "InputContract",
    "Normalize",
    "build_model",
    "fold_rgb_conv",
    "is_model_name",
    "list_models",
    "load_external_model",
    "with_class_bias",
    "wrap_module",
]
