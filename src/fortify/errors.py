"""User-facing errors.

Anything a user can cause (bad path, bad spec, mismatched checkpoint) raises a subclass of
`FortifyError` with a one-line message. The CLI prints that line and exits non-zero; it never
shows a traceback for these. Bugs raise ordinary exceptions and do show one.
"""

from __future__ import annotations


class FortifyError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    exit_code = 2


class DataError(FortifyError):
    """The dataset, an image or a split manifest cannot be used."""


class ConfigError(FortifyError):
    """A configuration value (model, mode, eps, profile, output dir) is invalid."""


class SpecError(ConfigError):
    """An attack spec or a parameter value does not parse (a configuration value, so a ConfigError)."""


class CheckpointError(FortifyError):
    """A checkpoint is missing, unsafe, or does not match the model/data."""
