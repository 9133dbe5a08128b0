"""`torchrun -m fortify certify`: two gloo processes share the work units out and give what one process
gives, image for image; a units folder of another configuration is refused (exit 2, one line, nothing
overwritten). 5 test images in units of 2: neither the world size nor the unit size divides them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fortify.fileio import read_json

pytestmark = pytest.mark.slow  # two torchrun launches of a tiny certification, ~30 s

ROOT = Path(__file__).resolve().parents[2]
ARGS = (
    "--n0 10 --n 20 --alpha 0.01 --limit 5 --unit-size 2 --radii 0.2 --attack-steps 1 --attack-samples 2 "
    "--attack-n 10 --batch-size 40 --finetune-epochs 0 --device cpu --precision fp32"
).split()


def certify(ckpt: Path, data: str, out: Path, *extra: str, nproc: int = 1) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "FORTIFY_THREADS": "1"}
    launch = [sys.executable, "-m", "fortify"]
    if nproc > 1:  # "--": torchrun would read certify's --n as an abbreviation of its own options
        launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
                  "--master-port", "29547", "-m", "fortify", "--"]  # fmt: skip
    cmd = [*launch, "certify", "--checkpoint", str(ckpt), "--data", data, "--out", str(out)]
    return subprocess.run([*cmd, *ARGS, *extra], capture_output=True, text=True, env=env, timeout=600)


def _outcomes(payload: dict) -> dict:
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in payload["per_image"]]
    return {"per_image": strip, "certified": payload["certified"], "empirical": payload["empirical"]}


def test_two_processes_equal_one_and_other_units_are_refused(tiny_checkpoint, phantom, tmp_path):
    one = certify(tiny_checkpoint, phantom, tmp_path / "one")
    assert one.returncode == 0, one.stderr[-3000:]
    two = certify(tiny_checkpoint, phantom, tmp_path / "two", nproc=2)
    assert two.returncode == 0, two.stderr[-3000:]
    single, double = (
        read_json(tmp_path / "one" / "certify.json"),
        read_json(tmp_path / "two" / "certify.json"),
    )
    assert single["units"] == {"size": 2, "count": 3, "reused": 0, "processes": 1}
    assert double["units"] == {"size": 2, "count": 3, "reused": 0, "processes": 2}
    assert [r["index"] for r in double["per_image"]] == list(range(5))  # every image once, in order
    assert _outcomes(double) == _outcomes(single)
    assert two.stdout.count("certified") == one.stdout.count("certified")  # rank 0 alone prints

    units = tmp_path / "two" / "units"
    assert sorted(p.name for p in units.glob("unit-*")) == [f"unit-{i:05d}.safetensors" for i in range(3)]
    resumed = certify(tiny_checkpoint, phantom, tmp_path / "two", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "reused 3 of 3 units" in resumed.stdout
    assert _outcomes(read_json(tmp_path / "two" / "certify.json")) == _outcomes(single)

    before = {p.name: p.read_bytes() for p in units.iterdir()}
    other = certify(tiny_checkpoint, phantom, tmp_path / "two", "--resume", "--seed", "1")
    lines = [line for line in other.stderr.splitlines() if line.strip()]
    assert other.returncode == 2 and len(lines) == 1, other.stderr[-3000:]
    assert lines[0].startswith("fortify: error:") and "seed differs" in lines[0]
    assert {p.name: p.read_bytes() for p in units.iterdir()} == before
