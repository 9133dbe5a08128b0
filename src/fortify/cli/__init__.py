"""The `fortify` command. Parses arguments, calls the Python API, prints. No logic of its own.

Each group of subcommands lives in its own module with a `register(app)` function, so the
people building data, training and evaluation each own one file here.
"""

from __future__ import annotations

import shlex
import sys

import typer
import typer.main

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


def _register_all() -> None:
    from fortify.cli import (
        attack_command,
        certify_command,
        data_commands,
        detect_command,
        evaluate_command,
        explain_command,
        operating_point_command,
        pool_command,
        report_commands,
        train_command,
    )

    for module in (
        data_commands,
        train_command,
        attack_command,
        evaluate_command,
        explain_command,
        detect_command,
        certify_command,
        operating_point_command,
        pool_command,
        report_commands,
    ):
        module.register(app)


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


def main(argv: list[str] | None = None) -> None:
    try:
        _register_all()  # reads the shipped profiles (the train command's defaults)
        app(args=argv, standalone_mode=True)
    except FortifyError as e:
        error_exit(str(e), e.exit_code)
    except SystemExit as e:
        if e.code != 130:
            raise
        # typer turns Ctrl-C inside a command into a silent exit 130: say how to continue
        error_exit(continue_hint(sys.argv[1:] if argv is None else argv), 130)
    except KeyboardInterrupt:
        error_exit(continue_hint(sys.argv[1:] if argv is None else argv), 130)
