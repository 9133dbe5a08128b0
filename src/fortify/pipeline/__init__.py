"""fortify.pipeline: the whole study in one resumable command (`fortify reproduce`)."""

from fortify.pipeline.profiles import DEFENSES, EvalSettings, Profile, list_profiles, load_profile
from fortify.pipeline.reproduce import attack_specs, reproduce

__all__ = [
    "DEFENSES",
    "EvalSettings",
    "Profile",
    "attack_specs",
    "list_profiles",
    "load_profile",
    "reproduce",
]
