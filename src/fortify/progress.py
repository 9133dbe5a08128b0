"""Progress lines on stderr: the one implementation every stage uses.

On a terminal a live rich bar; in a log file (not a terminal) no bar, and `tasks` prints one plain
line as each piece of work starts, so a long run's log shows where it is. stderr, so commands
with `--json` keep stdout pure JSON. A leaf module: imports nothing from fortify.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
Advance = Callable[..., None]  # advance(n, **fields): n more items done; fields update the bar's columns


def _console():
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)  # a log file gets whole lines, not 80 columns


def _columns(fields: tuple[str, ...]):
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    extra = [TextColumn(f"{{task.fields[{name}]}}") for name in fields]
    return [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), *extra]


@contextlib.contextmanager
def tasks(
    enabled: bool, *, log_lines: bool = True, fields: tuple[str, ...] = ()
) -> Iterator[Callable[[str, int], Advance]]:
    """Yield `start(description, total) -> advance(n, **fields)`; no output when disabled.

    `log_lines`: when stderr is not a terminal, print one line per started task with the time since
    the previous one (evaluation); False prints nothing there (training prints its own epoch lines).
    `fields`: extra text columns the caller fills through `advance(n, name=text)`.
    """
    if not enabled:
        yield lambda description, total: lambda n=0, **kw: None
        return
    console = _console()
    if not console.is_terminal:
        last = [time.perf_counter()]

        def start_logged(description: str, total: int) -> Advance:
            if log_lines:
                now = time.perf_counter()
                console.print(f"  {description} ({total} images; previous step {now - last[0]:.0f} s)")
                last[0] = now
            return lambda n=0, **kw: None

        yield start_logged
        return
    from rich.progress import Progress

    with Progress(*_columns(fields), transient=False, console=console) as bar:

        def start(description: str, total: int) -> Advance:
            task = bar.add_task(description, total=total, **{name: "" for name in fields})
            return lambda n=0, **kw: bar.update(task, advance=n, **kw)

        yield start


def fmt_minutes(seconds: float) -> str:
    """A duration as people read it in a progress line: seconds below 90 s, else minutes."""
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def track(items: Iterable[T], total: int, description: str, enabled: bool) -> Iterator[T]:
    """Iterate `items` with a transient bar on a terminal; silently elsewhere (logs get no blank lines)."""
    if not enabled:
        yield from items
        return
    console = _console()
    if not console.is_terminal:
        yield from items
        return
    from rich.progress import track as rich_track

    yield from rich_track(items, total=total, description=description, transient=True, console=console)
