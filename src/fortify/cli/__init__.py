"""The `fortify` command. Parses arguments, calls the Python API, prints. No logic of its own.

Each command lives in its own module, `fortify.cli.<name>_command`, which defines the command as a plain
function and a `register(app)` that adds it with `app.command(NAME)(function)` (`profile` adds its group
of `list` and `show`). `COMMANDS` below is the one table of them; `_register_all` registers them in its
order, which is the order of `fortify --help`. A module is imported only then, and imports the heavy
libraries (torch, ...) inside its command's body, so `fortify --help` stays quick.
"""

from __future__ import annotations

import importlib
import shlex
import sys

import typer
import typer.main

from fortify.cli.printing import warnings_once
from fortify.errors import FortifyError

app = typer.Typer(
    name="fortify",
    help="Adversarial robustness for medical image classifiers, measured honestly.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback(invoke_without_command=True)
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
) -> None:
    """Adversarial robustness for medical image classifiers, measured honestly."""
    if version:
        from fortify import __version__

        print(f"fortify {__version__}")
        raise typer.Exit()


# command name -> the module under fortify.cli that defines it and has its `register(app)`
COMMANDS: dict[str, str] = {
    "audit": "audit_command",
    "split": "split_command",
    "train": "train_command",
    "attack": "attack_command",
    "evaluate": "evaluate_command",
    "explain": "explain_command",
    "detect": "detect_command",
    "certify": "certify_command",
    "operating-point": "operating_point_command",
    "pool": "pool_command",
    "report": "report_command",
    "explore": "explore_command",
    "profile": "profile_command",
    "reproduce": "reproduce_command",
}


def _register_all() -> None:
    """Add every command of `COMMANDS` to `app`, once (main may run many times in one process: tests)."""
    done = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
    for name, module_name in COMMANDS.items():
        if name not in done:
            importlib.import_module(f"fortify.cli.{module_name}").register(app)


def error_exit(message: str, code: int = 2) -> None:
    """Print a one-line error to stderr and exit non-zero (no traceback)."""
    first_line = str(message).strip().splitlines()[0] if str(message).strip() else "unknown error"
    print(f"fortify: error: {first_line}", file=sys.stderr)
    raise SystemExit(code)


def continue_hint(argv: list[str]) -> str:
    """What Ctrl-C prints: the exact command that continues the work (the same one with --resume and
    without --force, which would wipe what was done) for a command that can resume; else that it cannot."""
    name = argv[0] if argv else ""
    command = typer.main.get_command(app)
    sub = getattr(command, "commands", {}).get(name)
    if sub is None:
        return "interrupted"
    if not any("--resume" in p.opts for p in sub.params):
        return f"interrupted; fortify {name} cannot resume: rerun it to start again"
    args = [a for a in argv if a != "--force"]
    if "--resume" not in args:
        args.append("--resume")
    return f"interrupted; to continue, run: {shlex.join(['fortify', *args])}"


def _run(argv: list[str] | None) -> None:
    """The app on `argv`; a usage mistake (`--seed abc`, a missing option) as one `fortify: error:` line
    naming the command's --help, not click's box; Ctrl-C as exit 130."""
    from typer._click.exceptions import ClickException, NoArgsIsHelpError  # typer's own click

    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="fortify", standalone_mode=False)
    except NoArgsIsHelpError as e:  # `fortify` or `fortify profile` alone: the help, as typer prints it
        e.show()
        raise SystemExit(e.exit_code) from None
    except ClickException as e:
        where = e.ctx.command_path if getattr(e, "ctx", None) is not None else "fortify"
        message = e.format_message().strip().rstrip(".")
        error_exit(f"{message} (see {where} --help)", e.exit_code)
    except typer.Abort:
        raise SystemExit(1) from None
    # as click's standalone mode: always SystemExit (typer.Exit(code) inside a command, 130 for Ctrl-C)
    raise SystemExit(code if isinstance(code, int) else 0)


def main(argv: list[str] | None = None) -> None:
    try:
        _register_all()  # reads the shipped profiles (the train command's defaults)
        with warnings_once():
            _run(argv)
    except FortifyError as e:
        error_exit(str(e), e.exit_code)
    except SystemExit as e:
        if e.code != 130:
            raise
        # typer turns Ctrl-C inside a command into a silent exit 130: say how to continue
        error_exit(continue_hint(sys.argv[1:] if argv is None else argv), 130)
    except KeyboardInterrupt:
        error_exit(continue_hint(sys.argv[1:] if argv is None else argv), 130)
