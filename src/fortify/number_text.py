"""The one parser for numbers a user writes: `0.5`, `1e-3`, `2/255` (how eps is written everywhere), `inf`.

A leaf module (imports only fortify.errors), so every package uses it: attack specs, profiles and
`--set` values, and the CLI's `--eps` options all accept exactly the same spellings.
"""

from __future__ import annotations

import math
import re
from typing import Any

from fortify.errors import ConfigError, FortifyError

_DECIMAL = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def _from_text(text: str) -> float | None:
    text = text.strip()
    if "/" in text:
        num, _, den = text.partition("/")
        if _DECIMAL.fullmatch(num.strip()) and _DECIMAL.fullmatch(den.strip()) and float(den) != 0:
            return float(num) / float(den)
        return None
    if _DECIMAL.fullmatch(text) or text.lower() in ("inf", "+inf"):
        return float(text)
    return None


def parse_number(
    value: Any,
    what: str,
    *,
    lo: float | None = None,
    hi: float | None = None,
    error: type[FortifyError] = ConfigError,
) -> float:
    """An int, a float or text such as '2/255', '0.0078', '1e-3' -> float, within [lo, hi] when given.

    Booleans, NaN and anything else raise `error` (ConfigError unless the caller names another, e.g.
    SpecError for attack specs) with a one-line message that names `what`.
    """
    if isinstance(value, bool):
        number = None
    elif isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        number = _from_text(value)
    else:
        number = None
    if number is None or math.isnan(number):
        raise error(f"{what} {value!r} is not a number (fractions like 2/255 are fine)")
    shown = value.strip() if isinstance(value, str) else f"{number:g}"
    if lo is not None and hi is not None and not lo <= number <= hi:
        raise error(f"{what} must be in [{lo:g}, {hi:g}], got {shown}")
    if lo is not None and number < lo:
        raise error(f"{what} must be >= {lo:g}, got {shown}")
    if hi is not None and number > hi:
        raise error(f"{what} must be <= {hi:g}, got {shown}")
    return number
