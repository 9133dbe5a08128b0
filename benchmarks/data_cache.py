"""Decode cache benchmark: first (cold cache) vs second (cache hit) load of a dataset, in one run.

    .venv/bin/python benchmarks/data_cache.py [--data ../shared/datasets/iqothnccd] [--image-size 128]

The first load hashes every file, decodes and preprocesses every image and writes the cache; a
cache hit still reads and hashes every file (the key is the file contents) but decodes nothing.
The cache lives in a fresh temporary folder, so the first load is always cold. Files are read
once before timing so both loads see the same OS page cache and only decoding differs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from fortify.data import load_dataset

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "datasets" / "iqothnccd"))
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="cache-hit loads; the median is reported")
    args = parser.parse_args()
    torch.set_num_threads(1)

    for p in Path(args.data).rglob("*"):  # warm the page cache for both measurements alike
        if p.is_file():
            p.read_bytes()
    with tempfile.TemporaryDirectory(prefix="fortify-bench-cache-") as cache:
        t0 = time.perf_counter()
        first = load_dataset(args.data, image_size=args.image_size, cache_dir=cache)
        cold = time.perf_counter() - t0
        hits = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            again = load_dataset(args.data, image_size=args.image_size, cache_dir=cache)
            hits.append(time.perf_counter() - t0)
        assert torch.equal(first.images, again.images), "cache returned different pixels"
    hit = statistics.median(hits)
    result = {
        "images": len(first),
        "image_size": args.image_size,
        "first_load_s": round(cold, 3),
        "cache_hit_s": round(hit, 3),
        "cache_hit_runs_s": [round(h, 3) for h in hits],
        "speedup": round(cold / hit, 1),
        "target_met": cold / hit >= 10,
    }
    print(f"first load (decode + write cache): {cold:.3f} s for {len(first)} images at {args.image_size}px")
    print(f"second load (cache hit, median of {args.repeats}): {hit:.3f} s")
    print(f"speedup: {cold / hit:.1f}x (target >= 10x: {'met' if result['target_met'] else 'NOT met'})")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
