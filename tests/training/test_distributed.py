"""DDP on CPU: torchrun with 2 gloo processes trains, stays in sync, and agrees with 1 process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ARGS = (
    "train --data phantom:n=16 --model smallcnn --mode fast --eps 2/255 --eps-warmup-epochs 0 --epochs 2 "
    "--image-size 32 --batch-size 16 --lr 0.01 --precision fp32 --device cpu --val-attack-steps 2 --json"
).split()


def _run(nproc: int, out: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "fortify",
        *ARGS,
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    start = proc.stdout.index("{")
    return json.loads(proc.stdout[start:])


@pytest.mark.slow
def test_two_gloo_processes_agree_with_one(tmp_path):
    two = _run(2, tmp_path / "two")
    assert two["world_size"] == 2 and two["ddp_params_in_sync"] is True
    one = _run(1, tmp_path / "one")
    assert one["world_size"] == 1
    records = {}
    for name in ("one", "two"):
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        records[name] = [json.loads(x) for x in lines]
        assert [r["epoch"] for r in records[name]] == [1, 2]  # rank 0 alone wrote the files: no duplicates
        assert json.loads((tmp_path / name / "last.json").read_text())["world_size"] == (
            2 if name == "two" else 1
        )
    # Same data, seed, global batch and steps; only batch-norm statistics (per-rank halves) and the
    # attack noise differ, so the numbers agree within noise rather than exactly.
    for a, b in zip(records["one"], records["two"], strict=True):
        assert abs(a["loss"] - b["loss"]) < 0.15, (a["loss"], b["loss"])
        assert abs(a["val_clean_acc"] - b["val_clean_acc"]) <= 0.35
        assert a["lr"] == pytest.approx(b["lr"])  # same number of optimizer steps per epoch
