"""Transfer in work units: two torchrun (gloo) processes give what one gives, image for image; an
interrupted run resumed equals an uninterrupted one and does not redo its finished units; units of another
configuration are refused (one line naming the difference, nothing overwritten). 7 phantom test images in
units of 2: neither the world size nor the unit size divides them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fortify_eval_fixtures import PHANTOM
from safetensors.torch import load_file

from fortify.attacks import parse_spec
from fortify.errors import ConfigError
from fortify.evaluation import EvalSettings, evaluate_transfer
from fortify.evaluation import units as units_module
from fortify.fileio import read_json
from fortify.runtime import Runtime

pytestmark = pytest.mark.slow  # one torchrun launch and four in-process runs on 7 tiny images, ~30 s

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = EvalSettings(
    limit=7, unit_size=2, batch_size=4, transfer_attack=parse_spec("pgd:eps=8/255,steps=3")
)
RUNTIME = Runtime.resolve("cpu", "fp32")
SCRIPT = """
import sys
from fortify.attacks import parse_spec
from fortify.distributed import init_distributed, shutdown
from fortify.evaluation import EvalSettings, evaluate_transfer
from fortify.fileio import write_json
from fortify.runtime import Runtime

source, target, data, units, out = sys.argv[1:6]
dist = init_distributed("cpu")
attack = parse_spec("pgd:eps=8/255,steps=3")
settings = EvalSettings(limit=7, unit_size=2, batch_size=4, transfer_attack=attack)
pair = evaluate_transfer(source, target, data=data, settings=settings, runtime=Runtime.resolve("cpu", "fp32"),
                         units_dir=units)
if pair is not None:
    write_json(out, pair)
shutdown(dist)
"""


def _numbers(pair: dict) -> dict:
    return {k: v for k, v in pair.items() if k not in ("seconds", "units")}


def _unit_tensors(folder: Path) -> dict:
    return {p.name: load_file(p) for p in sorted(folder.glob("unit-*"))}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k].keys() == b[k].keys() and all(a[k][n].equal(b[k][n]) for n in a[k]) for k in a
    )


def test_two_processes_equal_one(tiny_checkpoint, tiny_checkpoint_b, tmp_path):
    single = evaluate_transfer(
        tiny_checkpoint, tiny_checkpoint_b, data=PHANTOM, settings=SETTINGS, runtime=RUNTIME,
        units_dir=tmp_path / "one",
    )  # fmt: skip
    assert single["units"] == {"size": 2, "count": 4, "reused": 0, "processes": 1} and single["n"] == 7
    script = tmp_path / "transfer_script.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "FORTIFY_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29559",
           str(script), str(tiny_checkpoint), str(tiny_checkpoint_b), PHANTOM, str(tmp_path / "two"),
           str(tmp_path / "two.json")]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    double = read_json(tmp_path / "two.json")
    assert double["units"]["processes"] == 2 and _numbers(double) == _numbers(single)
    assert _same(_unit_tensors(tmp_path / "two"), _unit_tensors(tmp_path / "one"))  # image for image


def test_interrupted_run_resumes_exactly_and_other_units_are_refused(
    tiny_checkpoint, tiny_checkpoint_b, tmp_path, monkeypatch
):
    def run(units: Path, settings: EvalSettings = SETTINGS, resume: bool = False) -> dict:
        return evaluate_transfer(
            tiny_checkpoint, tiny_checkpoint_b, data=PHANTOM, settings=settings, runtime=RUNTIME,
            units_dir=units, resume=resume,
        )  # fmt: skip

    reference = run(tmp_path / "a")
    real, saved = units_module.UnitStore.save, []

    def dies_after_two(self, result):
        if len(saved) == 2:
            raise KeyboardInterrupt
        saved.append(result.index)
        real(self, result)

    monkeypatch.setattr(units_module.UnitStore, "save", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b")
    monkeypatch.setattr(units_module.UnitStore, "save", real)
    resumed = run(tmp_path / "b", resume=True)
    assert resumed["units"]["reused"] == 2 and _numbers(resumed) == _numbers(reference)
    assert _same(_unit_tensors(tmp_path / "b"), _unit_tensors(tmp_path / "a"))

    before = {p.name: p.read_bytes() for p in (tmp_path / "b").iterdir()}
    with pytest.raises(ConfigError, match="seed differs") as refused:
        run(tmp_path / "b", SETTINGS.replace(seed=1), resume=True)
    assert "\n" not in str(refused.value)
    with pytest.raises(ConfigError, match="--resume"):  # finished units are never silently reused
        run(tmp_path / "b")
    assert {p.name: p.read_bytes() for p in (tmp_path / "b").iterdir()} == before
