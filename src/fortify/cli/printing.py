"""What every command prints the same way: warnings as one `fortify: warning: ...` line each (each distinct
message once per command), and a console wide enough for a results table."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from rich.console import Console

T = TypeVar("T")

# The warnings printed since `warnings_once` began: each distinct message is printed once per command.
_shown: set[str] = set()


def warning_line(message: object) -> bool:
    """Print `fortify: warning: <message>` on stderr unless this command already did; whether it did now."""
    text = " ".join(str(message).split())  # one line, whatever the message's own line breaks
    if text in _shown:
        return False
    _shown.add(text)
    print(f"fortify: warning: {text}", file=sys.stderr)
    return True


def _show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    warning_line(message)


@contextmanager
def warnings_once() -> Iterator[None]:
    """For one command: every warning as one `fortify: warning: <message>` line (no source file, no code
    line), each distinct message once however many stages raise it."""
    _shown.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)  # repeats reach `_show`, which drops them
        warnings.showwarning = _show
        yield


@contextmanager
def data_warnings_reported() -> Iterator[None]:
    """Record the block's warnings, then print them after it: data warnings one line each (no repeats
    lost to Python's once-per-place filter), anything else as Python shows it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    print_data_warnings(caught)


def print_data_warnings(caught: list[warnings.WarningMessage]) -> None:
    """Data warnings as one `fortify: warning: ...` line each; anything else as Python shows it (under
    `warnings_once`, the same one line)."""
    for w in caught:
        if w.category.__name__ == "DataWarning":
            warning_line(w.message)
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
            warning_line(w.message)
            printed.append(str(w.message))
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return result, printed


def note_nothing_to_resume(out: object) -> None:
    """What --resume says where there is nothing to continue: one line, the same in every command."""
    print(f"fortify: note: nothing to resume in {out}: starting a new run", file=sys.stderr)


def nothing_in(folder: object) -> bool:
    """Whether `folder` is absent or empty (nothing a --resume could continue)."""
    from pathlib import Path

    path = Path(str(folder))
    return not path.is_dir() or not any(path.iterdir())


def wide_console(min_width: int) -> Console:
    """A stdout console at least `min_width` columns wide, so a results table is not squeezed."""
    return Console(width=max(Console().width, min_width))
