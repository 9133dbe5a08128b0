"""Options shared by the `fortify` commands, declared once.

Each function returns the `typer.Option` for one option name, with the wording every command uses;
a command passes only what is its own (the `--out` folder's contents, a default that differs). So
`--data`, `--device` or `--resume` read and behave the same in every command.

`dataclass_parameters` derives a command's options from a settings dataclass (defaults, types and,
unless the command words it, help from the field's comment): `fortify train` is TrainConfig's fields.
"""

from __future__ import annotations

import inspect
import io
import re
import tokenize
import typing
from collections.abc import Callable
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import typer

from fortify.data.dicom import DEFAULT_WINDOW

KEYWORD = inspect.Parameter.KEYWORD_ONLY
DEVICE_HELP = "auto | cpu | cuda | cuda:N | mps"
DATA_HELP = "Dataset root folder (one subfolder per class), or 'phantom[:n=K]'."
CHECKPOINT_SPLIT_HELP = "Split manifest (default: the checkpoint's)."


def data(help: str = DATA_HELP) -> Any:
    return typer.Option(..., "--data", help=help)


def split(help: str = CHECKPOINT_SPLIT_HELP) -> Any:
    return typer.Option(None, "--split", help=help)


def out(help: str, *, required: bool = True) -> Any:
    return typer.Option(... if required else None, "--out", help=help)


def check_out_file(path: Path | None, example: str) -> None:
    """An --out that names a file: refuse a folder (or a file standing where its folder should be) before
    any work, which can take minutes, ends in IsADirectoryError."""
    from fortify.errors import ConfigError

    if path is None:
        return
    if path.is_dir():
        raise ConfigError(f"--out {path} is a folder; give a file name (e.g. {path / example})")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise ConfigError(f"--out {path}: {parent} is a file, not a folder")


def force(help: str = "Start over in an --out folder that holds another run's files.") -> Any:
    return typer.Option(False, "--force", help=help)


def resume(help: str = "Continue an interrupted run in --out.") -> Any:
    return typer.Option(False, "--resume", help=help)


def seed(default: int = 0, help: str | None = None) -> Any:
    return typer.Option(default, "--seed", help=help)


def device(default: str = "auto") -> Any:
    return typer.Option(default, "--device", help=DEVICE_HELP)


def precision(default: str = "auto", help: str = "auto | fp32 | bf16") -> Any:
    return typer.Option(default, "--precision", help=help)


def batch_size(default: int, help: str | None = None) -> Any:
    return typer.Option(default, "--batch-size", min=1, help=help)


def limit(help: str, *, min: int | None = 1) -> Any:
    return typer.Option(None, "--limit", min=min, help=help)


def as_json(help: str) -> Any:
    return typer.Option(False, "--json", help=help)


def field_comments(cls: type) -> dict[str, str]:
    """`name: type = default  # comment` -> {name: comment}, read from a dataclass's source: the trailing
    comment is a field's documentation, so the CLI's help and the code cannot drift apart."""
    comments: dict[str, str] = {}
    owner = None
    for tok in tokenize.generate_tokens(io.StringIO(inspect.getsource(cls)).readline):
        line = tok.line
        m = re.match(r"\s+(\w+): [^=]+=", line)
        if m:
            owner = m.group(1)
        if tok.type == tokenize.COMMENT and owner and not line.lstrip().startswith("#"):
            comments.setdefault(owner, tok.string.lstrip("#").strip())  # not a comment line of its own
    return comments


def dataclass_parameters(
    cls: type,
    *,
    help: dict[str, str],
    defaults: dict[str, Any] | None = None,
    required: tuple[str, ...] = (),
    parsers: dict[str, Callable[[Any], Any]] | None = None,
    shown: dict[str, str] | None = None,
) -> list[inspect.Parameter]:
    """One keyword parameter per field of `cls` (option `--field-name`), for a typer command signature.

    Types come from the dataclass, defaults from `defaults` or else the dataclass, help from `help` or
    else the field's comment. `parsers` turn an option's text into the field's value (eps "2/255"),
    `shown` is how --help prints a default; `required` fields have none.
    """
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    defaults, parsers, shown = defaults or {}, parsers or {}, shown or {}
    params = []
    for f in fields(cls):
        if f.name in required:
            default = ...
        elif f.name in defaults:
            default = defaults[f.name]
        else:
            default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        extra: dict[str, Any] = {}
        if f.name in parsers:
            extra["parser"] = parsers[f.name]
        if f.name in shown:
            extra["show_default"] = shown[f.name]
        flag = "--" + f.name.replace("_", "-")
        if hints[f.name] in (bool, bool | None):
            flag += f"/--no-{flag[2:]}"  # a default of True must be possible to turn off
        option = typer.Option(default, flag, help=help.get(f.name) or comments.get(f.name), **extra)
        params.append(inspect.Parameter(f.name, KEYWORD, default=option, annotation=hints[f.name]))
    return params


def keyword(name: str, option: Any, annotation: Any) -> inspect.Parameter:
    """A command parameter that is not a dataclass field (--resume, --json, ...)."""
    return inspect.Parameter(name, KEYWORD, default=option, annotation=annotation)


def with_signature(fn: Callable[..., Any], params: list[inspect.Parameter]) -> Callable[..., Any]:
    """Give a `**kwargs` command function the signature typer builds its options from."""
    fn.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return fn


# Commands that load data: the DICOM display window and the split grouping.
WINDOW_HELP = (
    "DICOM display window on Hounsfield units: lung (W1500 L-600), mediastinum (W350 L50) or WIDTH,LEVEL "
    "(e.g. 400,40). Ignored for PNG/JPEG; recorded in the split manifest, which later commands follow."
)
GROUPING_HELP = (
    "What stays on one side: 'scan' (runs of similar consecutive slices + near-duplicates; default), "
    "'near-duplicate' (near-identical images only: leaks neighbouring slices) or 'given' (the dataset's "
    "own train/, val/, test/ folders). DICOM files with PatientID (else study/series UID) are grouped by it."
)


def window_option(default: str | None = DEFAULT_WINDOW) -> Any:
    """`--window`; default None where the profile or manifest decides unless it is given."""
    return typer.Option(default, "--window", help=WINDOW_HELP)


def grouping_option(default: str | None = "scan") -> Any:
    """`--grouping`; default None where the profile decides unless it is given."""
    return typer.Option(default, "--grouping", help=GROUPING_HELP)
