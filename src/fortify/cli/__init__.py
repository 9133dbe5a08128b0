"""The `fortify` command. Parses arguments, calls the Python API, prints. No logic of its own.

Each group of subcommands lives in its own module with a `register(app)` function, so the
people building data, training and evaluation each own one file here.
"""

from __future__ import annotations

import sys

import typer

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
        report_commands,
    ):
        module.register(app)


def error_exit(message: str, code: int = 2) -> None:
    """Print a one-line error to stderr and exit non-zero (no traceback)."""
    first_line = str(message).strip().splitlines()[0] if str(message).strip() else "unknown error"
    print(f"fortify: error: {first_line}", file=sys.stderr)
    raise SystemExit(code)


def main(argv: list[str] | None = None) -> None:
    _register_all()
    try:
        app(args=argv, standalone_mode=True)
    except FortifyError as e:
        error_exit(str(e), e.exit_code)
    except KeyboardInterrupt:
        error_exit("interrupted; rerun with --resume to continue", 130)
