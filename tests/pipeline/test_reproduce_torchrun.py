"""`torchrun -m fortify reproduce`: training under DDP, evaluation shared out in work units, rank 0 alone
writing the run directory. A 2-process gloo run of the tiny pipeline must finish with every stage recorded
once, each model evaluated over its whole test set exactly once by two processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fortify.fileio import read_json

ROOT = Path(__file__).resolve().parents[2]
SETS = [
    "image_size=16", "limit_per_class=4", "evaluate.limit=12", "evaluate.unit_size=5",
    "evaluate.pgd_steps=2", "evaluate.strong_steps=1", "evaluate.square_queries=5", "evaluate.l2_steps=1",
    "evaluate.cw_steps=2", "evaluate.cw_binary_steps=1", "evaluate.eps_curve=[0, 8/255]",
    "evaluate.curve_attacks=['pgd:steps=2']", "evaluate.sanity_restarts=1", "extras=[]",
]  # fmt: skip


@pytest.mark.slow
def test_reproduce_under_torchrun_with_two_processes(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "FORTIFY_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29531",
           "-m", "fortify", "reproduce", "--data", "phantom:n=12", "--profile", "smoke", "--out", str(out),
           *[a for s in SETS for a in ("--set", s)]]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("finished in") == 1  # rank 0 reports, once
    for stage in ("normal", "adversarial"):
        results = read_json(out / stage / "eval" / "results.json")
        n = results["data"]["n"]
        count = -(-n // 5)
        assert n % 5 and count >= 2  # units of unequal size, shared by both processes
        assert results["units"] == {"size": 5, "count": count, "reused": 0, "processes": 2}
        assert len(results["per_sample"]["paths"]) == len(set(results["per_sample"]["paths"])) == n
        assert read_json(out / stage / "eval" / "stage.json")["stage"] == f"{stage}/eval"
        assert sorted(p.name for p in (out / stage / "eval" / "units").glob("unit-*")) == [
            f"unit-{i:05d}.safetensors" for i in range(count)
        ]
    assert (out / "report" / "report.md").is_file() and (out / "comparison.json").is_file()
