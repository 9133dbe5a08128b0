"""Explorer benchmark: a phantom run of 5,000 test images, its explorer's build time and size, and the
time to its first screen in headless Chromium (issue 32 asks for under 2 s).

    .venv/bin/python benchmarks/explorer.py [--n 5000] [--image-size 128] [--repeats 3]

The run is synthetic: phantom scans (fortify.data's) as the clean images, and for a normal and an
adversarial model a results.json and an adversarial.safetensors as `fortify evaluate` writes them, with
made-up predictions (a share of images fooled by each attack) and sign-noise perturbations at 2/255.
"First screen" is measured in the page: performance.now() (milliseconds since navigation started) once
the list has drawn its first rows and every image in them has loaded. Chromium is the system's
(`chromium` on PATH), driven by Playwright; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from fortify.data import load_dataset
from fortify.fileio import write_json
from fortify.report.explorer import build_explorer, explorer_size

ATTACKS = ["fgsm", "pgd", "cw", "strong"]
EPS = 2 / 255


def _evaluation(folder: Path, x: torch.Tensor, y: torch.Tensor, paths: list[str], fooled_share: float):
    """results.json + adversarial.safetensors of one made-up model over the test images."""
    g = torch.Generator().manual_seed(int(fooled_share * 100))
    n, c = len(y), 3
    clean_pred = torch.where(torch.rand(n, generator=g) < 0.9, y, (y + 1) % c)
    ok = clean_pred == y
    first = torch.full((n,), -1, dtype=torch.long)
    t = {"labels": y, "clean_pred": clean_pred, "clean_conf": 0.5 + 0.5 * torch.rand(n, generator=g)}
    for k, a in enumerate(ATTACKS):
        fooled = ok & (torch.rand(n, generator=g) < fooled_share * (k + 1) / len(ATTACKS))
        first[fooled & (first < 0)] = k
        pred = torch.where(fooled | ~ok, (y + 1) % c, y)
        prob = torch.softmax(torch.randn(n, c, generator=g), 1)
        t.update({f"pred.{a}": pred, f"conf.{a}": prob.max(1).values, f"prob.{a}": prob})
    t["prob.clean"] = torch.softmax(torch.randn(n, c, generator=g), 1)
    t["cw_l2.cw"] = torch.rand(n, generator=g)
    noise = EPS * torch.sign(torch.randn(x.shape, generator=g))
    t["clean"] = (x * 255).round().to(torch.uint8)
    t["adv"] = ((x + noise).clamp(0, 1) * 255).round().to(torch.uint8)
    t["first_fooled"] = first
    folder.mkdir(parents=True)
    meta = {"format": "fortify-adversarial/1", "attacks": json.dumps(ATTACKS)}
    save_file({k: v.contiguous() for k, v in t.items()}, str(folder / "adversarial.safetensors"), meta)
    classes = ["benign", "malignant", "normal"]
    results = {
        "format": "fortify-results/1",
        "checkpoint": {"model": "resnet18", "mode": "standard" if fooled_share > 0.5 else "mixed"},
        "data": {"n": n, "classes": classes, "image_size": x.shape[-1], "synthetic": True},
        "threat_model": {"norm": "linf", "eps": EPS},
        "attacks": {a: {"spec": f"{a}:eps=2/255"} for a in ATTACKS},
        "per_sample": {"paths": paths, "groups": [f"patient-{i // 20}" for i in range(n)]},
    }
    write_json(folder / "results.json", results)


def first_screen_ms(index: Path, repeats: int) -> list[float]:
    from playwright.sync_api import sync_playwright

    times = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        for _ in range(repeats):
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(index.resolve().as_uri(), wait_until="commit")
            page.wait_for_function(
                "document.querySelectorAll('.row.item').length > 0 && "
                "[...document.querySelectorAll('#spacer img')].every(i => i.complete && i.naturalWidth > 0)",
                polling=5,
            )
            times.append(page.evaluate("performance.now()"))
            page.close()
        browser.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="test images")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="page loads; the median is reported")
    args = parser.parse_args()
    torch.set_num_threads(1)
    ds = load_dataset(f"phantom:n={-(-args.n // 3)}", image_size=args.image_size)
    x, y = ds.tensors()
    x, y, paths = x[: args.n], y[: args.n], list(ds.paths)[: args.n]
    with tempfile.TemporaryDirectory(prefix="fortify-bench-explorer-") as tmp:
        run = Path(tmp) / "run"
        _evaluation(run / "normal" / "eval", x, y, paths, 0.8)
        _evaluation(run / "adversarial" / "eval", x, y, paths, 0.3)
        t0 = time.perf_counter()
        index = build_explorer(run)
        build_s = time.perf_counter() - t0
        times = first_screen_ms(index, args.repeats)
        size = explorer_size(index.parent)
        print(
            json.dumps(
                {
                    "images": args.n,
                    "image_size": args.image_size,
                    "models": 2,
                    "build_seconds": round(build_s, 1),
                    "explorer_mb": round(size / 1e6, 1),
                    "data_js_mb": round((index.parent / "data.js").stat().st_size / 1e6, 2),
                    "first_screen_ms": [round(t) for t in times],
                    "first_screen_median_ms": round(statistics.median(times)),
                }
            )
        )


if __name__ == "__main__":
    main()
