"""fortify.training: adversarial training recipes, checkpoints, resumable run directories."""

from fortify.training.checkpoints import load_model, read_checkpoint_info, save_checkpoint
from fortify.training.config import ADVERSARIAL_MODES, MODES, TrainConfig
from fortify.training.loop import train

__all__ = [
    "ADVERSARIAL_MODES",
    "MODES",
    "TrainConfig",
    "load_model",
    "read_checkpoint_info",
    "save_checkpoint",
    "train",
]
