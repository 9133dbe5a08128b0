"""What every command prints the same way: data warnings as one `fortify: warning: ...` line each, and a
console wide enough for a results table."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from rich.console import Console

T = TypeVar("T")


@contextmanager
def data_warnings_reported() -> Iterator[None]:
    """Record the block's warnings, then print them after it: data warnings one line each (no repeats
    lost to Python's once-per-place filter), anything else as Python shows it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    print_data_warnings(caught)


def print_data_warnings(caught: list[warnings.WarningMessage]) -> None:
    """Data warnings as one `fortify: warning: ...` line each; anything else as Python shows it."""
    for w in caught:
        if w.category.__name__ == "DataWarning":
            print(f"fortify: warning: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def with_warning_lines(fn: Callable[[], T]) -> tuple[T, list[str]]:
    """Run fn; print each data warning as one `fortify: warning: ...` line on stderr; return them too."""
    from fortify.data import DataWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        result = fn()
    printed = []
    for w in caught:
        if issubclass(w.category, DataWarning):
            print(f"fortify: warning: {w.message}", file=sys.stderr)
            printed.append(str(w.message))
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return result, printed


def wide_console(min_width: int) -> Console:
    """A stdout console at least `min_width` columns wide, so a results table is not squeezed."""
    return Console(width=max(Console().width, min_width))
