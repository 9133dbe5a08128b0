"""detect's attacks in work units: two torchrun (gloo) processes give what one gives, image for image; an
interrupted run resumed equals an uninterrupted one and does not redo its finished units; units of another
configuration are refused (exit 2, one line, nothing overwritten). 7 test images in units of 4 on a 32 px
phantom smallcnn: neither the world size nor the unit size divides the sets attacked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluation"))
from fortify_eval_fixtures import PHANTOM, tiny_checkpoint_path  # noqa: E402

from fortify.cli import app, detect_command, main  # noqa: E402
from fortify.detect import SMOKE, run_detect  # noqa: E402
from fortify.evaluation import units as units_module  # noqa: E402
from fortify.fileio import read_json  # noqa: E402
from fortify.runtime import Runtime  # noqa: E402

pytestmark = pytest.mark.slow  # two torchrun launches and three in-process runs of a tiny detection, ~1 min

ROOT = Path(__file__).resolve().parents[2]
ARGS = "--preset smoke --limit 7 --unit-size 4 --steps 2 --eps 8/255 --device cpu --precision fp32".split()
SETTINGS = SMOKE.replace(models="normal", test_limit=7, unit_size=4, adaptive_steps=2, eps=8 / 255)
RUNTIME = Runtime.resolve("cpu", "fp32")
PURPOSES = ("fit", "test", "adaptive")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    detect_command.register(app)
    return tiny_checkpoint_path(tmp_path_factory)


def _numbers(payload: dict) -> dict:
    """Everything detect.json says about the images, without the seconds and the process count."""

    def strip(d):
        if isinstance(d, dict):
            return {k: strip(v) for k, v in d.items() if k not in ("seconds", "processes", "reused")}
        return d

    return {name: strip({k: m[k] for k in ("clean", "attacks", "headline", "units")}) | {
        "head": m["detector"]["head"], "threshold": m["detector"]["threshold"]}
        for name, m in payload["models"].items()}  # fmt: skip


def _unit_tensors(out: Path) -> dict:
    return {
        (purpose, p.name): load_file(p)
        for purpose in PURPOSES
        for p in sorted((out / "units" / "normal" / purpose).glob("unit-*"))
    }


def _same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k].keys() == b[k].keys() and all(a[k][n].equal(b[k][n]) for n in a[k] if not n.endswith("cost"))
        for k in a
    )


def _detect_cli(ckpt: Path, out: Path, nproc: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "FORTIFY_THREADS": "1"}
    launch = [sys.executable, "-m", "fortify"]
    if nproc > 1:
        launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
                  "--master-port", "29553", "-m", "fortify", "--"]  # fmt: skip
    cmd = [*launch, "detect", "--checkpoint", str(ckpt), "--data", PHANTOM, "--out", str(out), *ARGS]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def test_two_processes_equal_one(checkpoint, tmp_path):
    one = _detect_cli(checkpoint, tmp_path / "one", 1)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _detect_cli(checkpoint, tmp_path / "two", 2)
    assert two.returncode == 0, two.stderr[-3000:]
    single, double = read_json(tmp_path / "one" / "detect.json"), read_json(tmp_path / "two" / "detect.json")
    assert double["models"]["normal"]["units"]["processes"] == 2
    assert _numbers(double) == _numbers(single)
    counts = single["models"]["normal"]["units"]["per_purpose"]
    assert counts["test"] == {"count": 2, "reused": 0} and counts["fit"]["count"] >= 2
    assert _same_tensors(_unit_tensors(tmp_path / "two"), _unit_tensors(tmp_path / "one"))  # image for image


def test_interrupted_run_resumes_exactly_and_other_units_are_refused(
    checkpoint, tmp_path, monkeypatch, capsys
):
    reference = run_detect(
        checkpoint, data=PHANTOM, out_dir=tmp_path / "a", settings=SETTINGS, runtime=RUNTIME
    )
    real, saved = units_module.UnitStore.save, []

    def dies_after_three(self, result):
        if len(saved) == 3:
            raise KeyboardInterrupt  # killed while the fourth unit is being written
        saved.append(result.index)
        real(self, result)

    monkeypatch.setattr(units_module.UnitStore, "save", dies_after_three)
    out = tmp_path / "b"
    with pytest.raises(KeyboardInterrupt):
        run_detect(checkpoint, data=PHANTOM, out_dir=out, settings=SETTINGS, runtime=RUNTIME)
    assert not (out / "detect.json").exists()
    monkeypatch.setattr(units_module.UnitStore, "save", real)
    resumed = run_detect(
        checkpoint, data=PHANTOM, out_dir=out, settings=SETTINGS, runtime=RUNTIME, resume=True, progress=True
    )
    assert resumed["models"]["normal"]["units"]["reused"] == 3
    total = resumed["models"]["normal"]["units"]["count"]
    assert f"reused 3 of {total} units" in capsys.readouterr().err
    assert _numbers(resumed) == _numbers(reference)

    # Another configuration on the same folder: one line, exit 2, nothing overwritten.
    before = {p: p.read_bytes() for p in (out / "units").rglob("*") if p.is_file()}
    argv = ["detect", "--checkpoint", str(checkpoint), "--data", PHANTOM, "--out", str(out), *ARGS]
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--resume", "--seed", "1"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exc.value.code == 2 and len(err) == 1, err
    assert err[0].startswith("fortify: error:") and "seed differs" in err[0]
    assert {p: p.read_bytes() for p in (out / "units").rglob("*") if p.is_file()} == before
