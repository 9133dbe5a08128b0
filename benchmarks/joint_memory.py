"""Peak memory of the joint (whole-scan) attack: does a 35-slice scan at 224 px fit in 8 GiB?

`joint_pgd` attacks every slice of one patient at once but runs the model on `chunk` slices at a time
(fortify.attacks.joint), so its memory is that of `chunk` slices' activations plus a few copies of the
scan's pixels, whatever the scan's length. Each chunk size runs in a fresh process, which reports its peak
resident memory (CPU: ru_maxrss, so the model, torch and Python are included) or the peak CUDA memory
allocated (GPU). ResNet50 (the study's model) with random weights: memory does not depend on the weights.

    .venv/bin/python benchmarks/joint_memory.py --slices 35 --size 224 --chunks 4,16,35 --steps 2
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def measure(slices: int, size: int, chunk: int, steps: int, device: str) -> dict:
    import torch

    from fortify.attacks import joint_pgd
    from fortify.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet50", 3, in_channels=1).to(device).eval()
    x = torch.rand(slices, 1, size, size, device=device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    joint_pgd(
        model, x, 1, eps=2 / 255, steps=steps, chunk=chunk, generator=torch.Generator(device).manual_seed(0)
    )
    seconds = time.perf_counter() - t0
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    return {
        "slices": slices,
        "size": size,
        "chunk": chunk,
        "steps": steps,
        "device": device,
        "peak_gib": round(peak, 2),
        "seconds": round(seconds, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--slices", type=int, default=35)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--chunks", default="4,16,35")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # child process: one chunk size
    args = p.parse_args()
    if args.one is not None:
        print(json.dumps(measure(args.slices, args.size, args.one, args.steps, args.device)))
        return
    from fortify.runtime import cpu_kind

    print(f"CPU: {cpu_kind()}; ResNet50, {args.slices} slices at {args.size} px, fp32, {args.steps} steps")
    for chunk in [int(c) for c in args.chunks.split(",")]:
        cmd = [
            sys.executable,
            __file__,
            "--slices",
            str(args.slices),
            "--size",
            str(args.size),
            "--steps",
            str(args.steps),
            "--device",
            args.device,
            "--one",
            str(chunk),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        row = json.loads(out)
        print(f"chunk {chunk:3d}: peak {row['peak_gib']:.2f} GiB, {row['seconds']:.1f} s")


if __name__ == "__main__":
    main()
