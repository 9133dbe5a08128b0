"""fortify.number_text.parse_number: the one parser behind attack specs, profiles, --set and --eps."""

from __future__ import annotations

import pytest

from fortify.errors import ConfigError, SpecError
from fortify.number_text import parse_number


@pytest.mark.parametrize(
    "value, expected",
    [
        ("2/255", 2 / 255),
        (" 2 / 255 ", 2 / 255),
        ("0.0078", 0.0078),
        ("1e-3", 0.001),
        (".5", 0.5),
        ("8", 8.0),
        (3, 3.0),
        (0.25, 0.25),
        ("inf", float("inf")),
    ],
)
def test_accepted_spellings(value, expected):
    assert parse_number(value, "eps") == pytest.approx(expected)


@pytest.mark.parametrize(
    "value", ["abc", "1/0", "nan", "", "2/", "/255", "1/2/3", True, None, [1], float("nan")]
)
def test_rejected_values_are_one_line_config_errors(value):
    with pytest.raises(ConfigError) as exc:
        parse_number(value, "eps")
    msg = str(exc.value)
    assert msg.startswith("eps ") and "not a number" in msg and "\n" not in msg


def test_range_and_error_class():
    assert parse_number("0", "eps", lo=0) == 0.0
    with pytest.raises(ConfigError, match=r"eps must be >= 0, got -2/255"):
        parse_number("-2/255", "eps", lo=0)
    with pytest.raises(ConfigError, match=r"--eps must be in \[0, 1\], got 2"):
        parse_number("2", "--eps", lo=0, hi=1)
    with pytest.raises(SpecError):
        parse_number("x", "steps", error=SpecError)
