"""Evaluation in work units: 1 against N processes, and the overhead of units + resume.

    python benchmarks/scaling.py --checkpoint RUN/normal/best.safetensors --data DATA --split RUN/split.json \
        [--nproc 2] [--baseline-rev REV] [--repeats 1] [-- extra `fortify evaluate` options]

Runs the same `fortify evaluate` (a) with the code at --baseline-rev (the single-process evaluation before
work units, checked out into a temporary git worktree), (b) with this checkout in one process, (c) under
`torchrun --nproc-per-node N`, and (d) once more in one process with --resume over (b)'s finished units
(nothing left to compute: the cost of reading them back). Prints wall seconds and the ratios measured in
this one run (the machine is shared: compare ratios, not absolute times), checks that (b), (c) and (d)
agree image for image, and names the CPU. Not a test: nothing is asserted about speed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ARGS = [
    "--attacks", "fgsm:eps=2/255", "--attacks", "pgd:eps=2/255,steps=10",
    "--attacks", "strong:eps=2/255,steps=10,square_queries=100",
    "--curve-attack", "pgd:steps=5", "--eps-curve", "0,2/255,8/255", "--precision", "fp32",
]  # fmt: skip


def cpu_kind() -> str:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    kind = "AVX-512 BF16" if "avx512_bf16" in flags else "AVX2" if "avx2" in flags else platform.machine()
    model = next((line.split(":", 1)[1].strip() for line in flags.splitlines() if "model name" in line), "")
    return f"{model} ({kind}, {os.cpu_count()} cores)"


def run(cmd: list[str], src: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(src)}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{done.stderr[-3000:]}")
    return time.perf_counter() - t0


def per_image(results_json: Path) -> str:
    r = json.loads(results_json.read_text())
    return json.dumps([r["per_sample"], r["curves"], [(c["check"], c["passed"]) for c in r["sanity"]]])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--split")
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--baseline-rev", help="git revision of the pre-units evaluation (omit to skip (a))")
    ap.add_argument("extra", nargs="*", help="more `fortify evaluate` options (after --)")
    a = ap.parse_args()
    base = ["evaluate", "--checkpoint", a.checkpoint, "--data", a.data]
    base += ["--split", a.split] if a.split else []
    opts = a.extra or DEFAULT_ARGS
    py = [sys.executable, "-m"]
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        if a.baseline_rev:
            tree = out / "baseline"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), a.baseline_rev],
                           check=True, capture_output=True)  # fmt: skip
            try:
                times["baseline (one process, no units)"] = run(
                    [*py, "fortify", *base, "--out", str(out / "a"), *opts], tree / "src"
                )
            finally:
                remove = ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)]
                subprocess.run(remove, check=False)
        src = ROOT / "src"
        times["units, one process"] = run([*py, "fortify", *base, "--out", str(out / "b"), *opts], src)
        torchrun = [*py, "torch.distributed.run", "--nproc-per-node", str(a.nproc), "-m", "fortify"]
        times[f"units, {a.nproc} processes"] = run([*torchrun, *base, "--out", str(out / "c"), *opts], src)
        times["resume with every unit finished"] = run(
            [*py, "fortify", *base, "--out", str(out / "b"), "--resume", *opts], src
        )
        same = per_image(out / "b" / "results.json") == per_image(out / "c" / "results.json")
    print(f"CPU: {cpu_kind()}")
    for name, seconds in times.items():
        print(f"  {name:40s} {seconds:8.1f} s")
    one = times["units, one process"]
    if a.baseline_rev:
        print(
            f"overhead of units + resume, one process: {one / times['baseline (one process, no units)']:.3f}x"
        )
    print(f"speed-up with {a.nproc} processes: {one / times[f'units, {a.nproc} processes']:.2f}x")
    print(f"1 and {a.nproc} processes agree image for image: {same}")


if __name__ == "__main__":
    main()
