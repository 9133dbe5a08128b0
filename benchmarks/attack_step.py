"""What makes one attack step (forward + backward to the input) faster on this machine (not a test).

    nice -n 5 .venv/bin/python benchmarks/attack_step.py [--precision fp32] [--image-size 128] [--out F.json]

One attack step of ResNet18 (1-channel stem, eval mode, no parameter gradients) on random images, timed
for each variant against the plain baseline (contiguous memory, eager, batch 64, all threads) in
alternating rounds, the best round kept for each, so a neighbour's load hits all variants alike.
Variants: channels_last memory format; batch norm folded into the convolutions (exact in eval mode);
torch.compile (inductor) with and without dynamic shapes; batch size; thread count. Prints each
variant's throughput as a ratio to the baseline measured in the same run, and the CPU kind.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from fortify.fileio import write_json
from fortify.models import build_model
from fortify.models.fuse import fold_batchnorm
from fortify.runtime import cpu_kind


def step_fn(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str) -> Callable[[], None]:
    def step() -> None:
        xr = x.detach().clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = F.cross_entropy(model(xr).float(), y)
        torch.autograd.grad(loss, xr)

    return step


def timed(step: Callable[[], None], batch: int, seconds: float) -> float:
    """Images per second over repeated steps for about `seconds` (after one warm-up step)."""
    step()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < 2:
        step()
        n += 1
    return n * batch / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seconds", type=float, default=4.0, help="timing window per variant and round")
    p.add_argument("--skip-compile", action="store_true")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    base = build_model(a.model, 3, in_channels=1).eval()
    for q in base.parameters():
        q.requires_grad_(False)
    size = a.image_size

    def data(batch: int, channels_last: bool):
        x = torch.rand(batch, 1, size, size)
        y = torch.randint(0, 3, (batch,))
        return (x.contiguous(memory_format=torch.channels_last) if channels_last else x), y

    def variant(batch=64, channels_last=False, fold=False, compile_mode=None, nthreads=threads):
        model = fold_batchnorm(base) if fold else base
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        if compile_mode == "static":
            model = torch.compile(model, dynamic=False)
        elif compile_mode == "dynamic":
            model = torch.compile(model, dynamic=True)
        x, y = data(batch, channels_last)
        step = step_fn(model, x, y, a.precision)

        def run() -> float:
            old = torch.get_num_threads()
            torch.set_num_threads(nthreads)
            try:
                return timed(step, batch, a.seconds)
            finally:
                torch.set_num_threads(old)

        return run

    variants: dict[str, Callable[[], float]] = {
        "baseline (contiguous, eager, batch 64)": variant(),
        "channels_last": variant(channels_last=True),
        "batch-norm folded": variant(fold=True),
        "channels_last + folded": variant(channels_last=True, fold=True),
        "batch 16": variant(batch=16),
        "batch 128": variant(batch=128),
        "channels_last + folded, batch 128": variant(channels_last=True, fold=True, batch=128),
    }
    if threads > 1:
        variants["1 thread"] = variant(nthreads=1)
    if not a.skip_compile:
        for mode in ("static", "dynamic"):
            for cl in (False, True):
                name = f"torch.compile ({mode}){' + channels_last' if cl else ''} + folded"
                try:
                    run = variant(channels_last=cl, fold=True, compile_mode=mode)
                    t0 = time.perf_counter()
                    run()  # first call compiles
                    print(f"{name}: compiled in {time.perf_counter() - t0:.0f} s")
                    variants[name] = run
                except Exception as e:  # noqa: BLE001 - a benchmark reports what fails and goes on
                    print(f"{name}: unavailable ({type(e).__name__}: {str(e).splitlines()[0][:100]})")
    best: dict[str, float] = {}
    for r in range(a.rounds):
        for name, run in variants.items():
            best[name] = max(best.get(name, 0.0), run())
        print(f"round {r + 1}/{a.rounds} done")
    ref = best["baseline (contiguous, eager, batch 64)"]
    kind = cpu_kind()
    print(
        f"\n{a.model} {size} px, {a.precision}, {threads} threads, CPU {kind}; images/s and ratio to baseline"
    )
    for name, ips in best.items():
        print(f"  {name:48s} {ips:8.1f}  {ips / ref:5.2f}x")
    if a.out:
        write_json(
            a.out,
            {
                "cpu": kind,
                "precision": a.precision,
                "model": a.model,
                "image_size": size,
                "threads": threads,
                "images_per_second": best,
                "ratio": {k: v / ref for k, v in best.items()},
            },
        )


if __name__ == "__main__":
    main()
