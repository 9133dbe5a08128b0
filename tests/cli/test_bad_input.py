"""Every mistake a user can make on the command line gets one `fortify: error:` line and exit code 2.

The cases are generated from the commands' declared options (`typer.main.get_command(app)`), so a new
option is covered without a new test: an int/float option gets `abc` and, where it declares a range, a
value outside it; a Path option gets a missing path and the wrong kind (a file for a folder and vice
versa); an option whose help lists its choices (`a | b | c`) gets an unknown one. Hand-written cases
cover broken files (YAML profile, JSON manifest, a truncated or foreign checkpoint) and unusable data.
Each case runs in-process (fortify.cli.main) and checks: exit 2, exactly one `fortify: error:` line on
stderr, no traceback, nothing written into the --out folder.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import typer.main
from PIL import Image

import fortify.cli
from fortify.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluation"))
from fortify_eval_fixtures import PHANTOM, tiny_checkpoint_path  # noqa: E402

# Arguments that make each command valid (placeholders filled by the `places` fixture); a case changes one.
BASE: dict[str, list[str]] = {
    "audit": [PHANTOM],
    "split": [PHANTOM, "--out", "{out}/split.json"],
    "train": [
        "--data",
        PHANTOM,
        "--out",
        "{out}",
        "--model",
        "smallcnn",
        "--epochs",
        "1",
        "--image-size",
        "32",
    ],
    "attack": ["--checkpoint", "{ckpt}", "--data", PHANTOM, "--attack", "fgsm:eps=8/255", "--out", "{out}"],
    "evaluate": [
        "--checkpoint",
        "{ckpt}",
        "--data",
        PHANTOM,
        "--attacks",
        "fgsm:eps=8/255",
        "--out",
        "{out}",
    ],
    "explain": ["--checkpoint", "{ckpt}", "--data", PHANTOM, "--out", "{out}", "--limit", "2"],
    "detect": ["--checkpoint", "{ckpt}", "--data", PHANTOM, "--out", "{out}", "--limit", "4"],
    "certify": ["--checkpoint", "{ckpt}", "--data", PHANTOM, "--out", "{out}", "--limit", "2"],
    "operating-point": ["--checkpoint", "{ckpt}", "--data", PHANTOM, "--out", "{out}/op.json"],
    "pool": ["{results}"],
    "report": ["{rundir}"],
    "explore": ["{rundir}", "--out", "{out}"],
    "reproduce": ["--data", PHANTOM, "--out", "{out}", "--profile", "smoke"],
    "profile list": [],
    "profile show": ["quick"],
}
# Path parameters that name a file (the rest name folders); (command, option or argument name).
FILE_PATHS = {
    ("split", "--out"),
    ("audit", "--out"),
    ("operating-point", "--out"),
    ("pool", "--out"),
    ("pool", "results"),
    *((c, "--checkpoint") for c in ("attack", "evaluate", "explain", "detect", "certify", "operating-point")),
    *((c, "--split") for c in ("attack", "evaluate", "explain", "detect", "certify", "operating-point")),
    *((c, "--weights") for c in ("attack", "evaluate", "reproduce")),
    ("evaluate", "--transfer-from"),
    ("explain", "--normal"),
    ("explain", "--adversarial"),
    ("detect", "--adversarial"),
}
# Text options that name an input path (`--data` also takes 'phantom'): they get a missing path too.
TEXT_PATHS = {"--data", "data", "--split", "--init", "--weights"}
OUTPUTS = {"--out"}  # written, not read: a missing one is created, so only the wrong kind is a mistake


@dataclass
class Case:
    command: str
    option: str  # the option (or argument name) changed
    value: str
    why: str
    extra: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.command}:{self.option}={self.value}"


def _commands() -> dict[str, object]:
    fortify.cli._register_all()
    root = typer.main.get_command(fortify.cli.app)
    found = {}
    for name, cmd in root.commands.items():
        subs = getattr(cmd, "commands", None)
        for sub_name, sub in (subs or {name: cmd}).items():
            found[f"{name} {sub_name}" if subs else name] = sub
    return found


def _cases_for(command: str, param) -> list[Case]:
    if getattr(param, "is_flag", False) or param.name in ("help",):
        return []
    name = param.opts[0] if param.opts and param.opts[0].startswith("-") else param.name
    kind = param.type_descriptor.annotation
    lo, hi = getattr(param, "min", None), getattr(param, "max", None)
    cases = []
    if kind in (int, float, int | None, float | None):
        cases.append(Case(command, name, "abc", "not a number"))
        if lo is not None:
            cases.append(Case(command, name, str(lo - 1), "below the declared range"))
        if hi is not None:
            cases.append(Case(command, name, str(hi + 1), "above the declared range"))
    elif kind in (Path, Path | None, list[Path]):
        is_file = (command, name) in FILE_PATHS
        if name not in OUTPUTS:
            cases.append(Case(command, name, "{missing}", "missing path"))
        cases.append(Case(command, name, "{folder}" if is_file else "{file}", "wrong kind of path"))
    elif kind in (str, str | None) and name in TEXT_PATHS:
        cases.append(Case(command, name, "{missing}", "missing path"))
    elif kind in (str, str | None) and " | " in (param.help or "") and name.startswith("--"):
        cases.append(Case(command, name, "no-such-choice", "unknown choice"))
    return cases


def generated_cases() -> list[Case]:
    return [
        case for command, cmd in _commands().items() for p in cmd.params for case in _cases_for(command, p)
    ]


def _argv(case: Case) -> list[str]:
    base = list(BASE[case.command])
    if case.option.startswith("-"):
        if case.option in base:
            base[base.index(case.option) + 1] = case.value
        else:
            base += [case.option, case.value]
    else:  # a positional argument: the command's first
        base[0] = case.value
    return [*case.command.split(), *base, *case.extra]


@pytest.fixture(scope="module")
def places(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad-input")
    (root / "a-file.txt").write_text("not what was asked for\n")
    (root / "a-folder").mkdir()
    rundir = root / "run"
    rundir.mkdir()
    results = root / "results.json"
    results.write_text("{}\n")
    return {
        "ckpt": tiny_checkpoint_path(tmp_path_factory),
        "file": root / "a-file.txt",
        "folder": root / "a-folder",
        "missing": root / "no-such-dir" / "no-such-file.json",
        "rundir": rundir,
        "results": results,
    }


def run_case(argv: list[str], places: dict[str, Path], out: Path, capsys) -> tuple[int, str]:
    fill = {k: str(v) for k, v in places.items()} | {"out": str(out)}
    argv = [a.format(**fill) for a in argv]
    capsys.readouterr()
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    _, err = capsys.readouterr()
    return code, err


def assert_refused(code: int, err: str, out: Path) -> None:
    errors = [line for line in err.splitlines() if line.startswith("fortify: error:")]
    assert "Traceback" not in err, err
    assert code == 2, f"exit {code}: {err}"
    assert len(errors) == 1, err
    assert not out.exists() or not any(out.iterdir()), f"wrote into --out: {sorted(out.iterdir())}"


# Generated cases that still end in a traceback or start working: one line each, never skipped silently.
KNOWN: dict[str, str] = {}


def _param(case: Case):
    reason = KNOWN.get(case.id)
    marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
    return pytest.param(case, id=case.id, marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in generated_cases()])
def test_generated_case_refused_in_one_line(case: Case, places, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = run_case(_argv(case), places, out, capsys)
    assert_refused(code, err, out)


def test_generation_covers_every_command():
    covered = {c.command for c in generated_cases()}
    with_options = {name for name, cmd in _commands().items() if any(p.opts for p in cmd.params)}
    assert with_options - {"profile show", "profile list"} <= covered


# ---- hand-written: broken files and unusable data -------------------------------------------------------


def _write_image(path: Path, seed: int, size: tuple[int, int] = (40, 40)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, size, dtype=np.uint8)).save(path)


def test_broken_yaml_profile(tmp_path, places, capsys):
    profile = tmp_path / "broken.yaml"
    profile.write_text("name: broken\nimage_size: [1,\n")
    out = tmp_path / "out"
    code, err = run_case(
        ["reproduce", "--data", PHANTOM, "--out", "{out}", "--profile", str(profile)], places, out, capsys
    )
    assert_refused(code, err, out)
    assert "broken.yaml" in err and "line 3" in err


def test_broken_json_manifest(tmp_path, places, capsys):
    manifest = tmp_path / "split.json"
    manifest.write_text('{"dataset": {"root": "x",\n')
    out = tmp_path / "out"
    argv = [*BASE["evaluate"], "--split", str(manifest)]
    code, err = run_case(["evaluate", *argv], places, out, capsys)
    assert_refused(code, err, out)
    assert "split.json" in err and "line" in err


def _with(base: list[str], option: str, value: str) -> list[str]:
    args = list(base)
    args[args.index(option) + 1] = value
    return args


def _checkpoint_copy(places, tmp_path: Path) -> Path:
    src = places["ckpt"]
    dst = tmp_path / "ckpt" / src.name
    dst.parent.mkdir()
    dst.write_bytes(src.read_bytes())
    dst.with_suffix(".json").write_bytes(src.with_suffix(".json").read_bytes())
    return dst


def test_truncated_checkpoint(tmp_path, places, capsys):
    ckpt = _checkpoint_copy(places, tmp_path)
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    out = tmp_path / "out"
    argv = ["evaluate", *_with(BASE["evaluate"], "--checkpoint", str(ckpt))]
    code, err = run_case(argv, places, out, capsys)
    assert_refused(code, err, out)


def test_broken_checkpoint_json(tmp_path, places, capsys):
    ckpt = _checkpoint_copy(places, tmp_path)
    ckpt.with_suffix(".json").write_text('{"model": "smallcnn",\n  "classes": [\n')
    out = tmp_path / "out"
    argv = ["evaluate", *_with(BASE["evaluate"], "--checkpoint", str(ckpt))]
    code, err = run_case(argv, places, out, capsys)
    assert_refused(code, err, out)
    assert "line" in err


@pytest.mark.parametrize("name", ["foreign.pt", "foreign.safetensors"])
def test_foreign_checkpoint(name, tmp_path, places, capsys):
    import torch

    ckpt = tmp_path / name
    torch.save({"state_dict": {"w": torch.zeros(2)}}, ckpt)
    if ckpt.suffix == ".safetensors":
        ckpt.with_suffix(".json").write_bytes(places["ckpt"].with_suffix(".json").read_bytes())
    out = tmp_path / "out"
    argv = ["evaluate", *_with(BASE["evaluate"], "--checkpoint", str(ckpt))]
    code, err = run_case(argv, places, out, capsys)
    assert_refused(code, err, out)


def test_empty_dataset_folder(tmp_path, places, capsys):
    data = tmp_path / "empty"
    data.mkdir()
    out = tmp_path / "out"
    code, err = run_case(["split", str(data), "--out", "{out}/split.json"], places, out, capsys)
    assert_refused(code, err, out)


def test_class_folder_with_one_image(tmp_path, places, capsys):
    data = tmp_path / "data"
    for i in range(12):
        _write_image(data / "normal" / f"n{i}.png", seed=i)
    _write_image(data / "benign" / "b0.png", seed=99)
    out = tmp_path / "out"
    code, err = run_case(["split", str(data), "--out", "{out}/split.json"], places, out, capsys)
    assert_refused(code, err, out)
