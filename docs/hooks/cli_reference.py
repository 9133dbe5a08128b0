"""MkDocs hook: the CLI reference page is rendered from the real `fortify` command, so it cannot drift.

It depends on two names only: `fortify.cli.app` (the Typer app) and `fortify.cli._register_all` (which
adds the subcommands to the app; `fortify.cli.main` calls it before running, and so must we). The
placeholder `<!-- fortify-cli -->` in cli.md is replaced by `fortify --help` and every subcommand's help,
as `fortify <command> --help` prints it on a 100-column terminal without colour.

No `import click`: Typer may ship its own copy of click, so commands and contexts are taken from the
command objects themselves (duck typing), whichever click built them.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

PLACEHOLDER = "<!-- fortify-cli -->"
SRC = Path(__file__).resolve().parents[2] / "src"
WIDTH = 100


@functools.cache  # registering twice (mkdocs serve rebuilds) would add every command again
def _command() -> Any:
    if str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))  # this checkout's fortify, installed or not
    import typer.main

    import fortify.cli

    for name in ("app", "_register_all"):
        if not hasattr(fortify.cli, name):
            raise RuntimeError(
                f"docs/hooks/cli_reference.py: fortify.cli.{name} is gone; point the hook at what replaced it"
            )
    fortify.cli._register_all()
    return typer.main.get_command(fortify.cli.app)


def _help(command: Any, name: str, parent: Any) -> tuple[str, Any]:
    # Typer's rich help prints boxes straight to the terminal; rich_markup_mode None (a Typer option)
    # keeps click's plain-text help, which is returned as a string.
    command.rich_markup_mode = None
    ctx = command.context_class(
        command, info_name=name, parent=parent, terminal_width=WIDTH, max_content_width=WIDTH
    )
    return command.get_help(ctx), ctx


def _walk(command: Any, path: list[str], parent: Any) -> list[str]:
    """Markdown for one command and, for a group, each of its subcommands in the order `--help` lists."""
    text, ctx = _help(command, path[-1], parent)
    level = "#" * min(len(path) + 1, 4)
    parts = [f"{level} `{' '.join(path)}`\n\n```text\n{text.rstrip()}\n```\n"]
    for name in command.list_commands(ctx) if hasattr(command, "list_commands") else []:
        sub = command.get_command(ctx, name)
        if sub is not None and not sub.hidden:
            parts += _walk(sub, [*path, name], ctx)
    return parts


def render() -> str:
    """The whole CLI reference as Markdown: `fortify --help`, then every subcommand's help."""
    return "\n".join(_walk(_command(), ["fortify"], None))


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    if PLACEHOLDER not in markdown:
        return markdown
    return markdown.replace(PLACEHOLDER, render())
