"""The cost of one checkpoint's evaluation, before and after a change, measured in one run (not a test).

    nice -n 5 .venv/bin/python benchmarks/evaluation.py --checkpoint RUN/normal/best.safetensors \\
        --split RUN/split.json [--profile quick] [--before fold_bn=false,strong_version=full] \\
        [--after fold_bn=true,strong_version=standard] [--out F.json]

Runs `evaluate_checkpoint` with the profile's evaluation settings twice, once per setting group (each a
comma list of EvalSettings fields), and prints per stage (each headline attack, the eps curves, the
sanity runs, the total) the gradient evaluations, forward passes and seconds, with the after/before
ratios; then every reported accuracy of both runs and how many test images it moved. Gradient
evaluations do not depend on the machine; seconds do, so only their ratio within this run means much.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from fortify.evaluation import evaluate_checkpoint
from fortify.fileio import write_json
from fortify.pipeline.profiles import load_profile
from fortify.pipeline.study_stages import attack_specs
from fortify.runtime import Runtime, cpu_kind

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "iqothnccd"


def settings(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, value = part.split("=", 1)
        lowered = value.strip().lower()
        out[f"evaluate.{key.strip()}"] = (
            True
            if lowered == "true"
            else False
            if lowered == "false"
            else None
            if lowered == "none"
            else value
        )
    return out


def evaluate(profile: str, overrides: dict[str, Any], a: argparse.Namespace, runtime: Runtime) -> dict:
    prof = load_profile(profile, overrides)
    ev = prof.evaluate
    t0 = time.perf_counter()
    settings = ev.replace(attacks=attack_specs(prof), limit=a.limit if a.limit is not None else ev.limit)
    r = evaluate_checkpoint(
        a.checkpoint, data=a.data, settings=settings, split=a.split, runtime=runtime, progress=False
    )
    r["wall_seconds"] = time.perf_counter() - t0
    return r


def stages(r: dict) -> dict[str, tuple[int, int, float]]:
    """(gradient evaluations, forward passes, seconds) per attack and per extra stage."""
    out = {
        f"attack {k}": (a["gradient_evaluations"], a["forward_passes"], a["seconds"])
        for k, a in r["attacks"].items()
    }
    curve_s = sum(r["config"]["curve_seconds"].values())
    sanity_s = sum(v.get("seconds", 0.0) for v in r["sanity_runs"].values())
    out["curves"] = (*r["passes"]["curves"].values(), curve_s)
    out["sanity"] = (*r["passes"]["sanity"].values(), sanity_s)
    out["total"] = (*r["passes"]["total"].values(), r["wall_seconds"])
    return out


def accuracies(r: dict) -> dict[str, float]:
    acc = {"clean": r["clean"]["accuracy"], "worst case": r["worst_case"]["accuracy"]}
    acc.update({k: a["accuracy"] for k, a in r["attacks"].items()})
    for key, curve in r["curves"].items():
        for eps, value in curve["points"]:
            acc[f"curve {key} eps={255 * eps:g}/255"] = value
    return acc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--split", required=True)
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--profile", default="quick")
    p.add_argument("--before", default="fold_bn=false,strong_version=full")
    p.add_argument("--after", default="fold_bn=true,strong_version=standard")
    p.add_argument("--limit", type=int, default=None, help="first k test images (class-stratified)")
    p.add_argument("--precision", default="auto")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    runtime = Runtime.resolve("auto", a.precision)
    runs = {}
    for name, text in (("before", a.before), ("after", a.after)):
        print(f"{name}: {text} ...", flush=True)
        runs[name] = evaluate(a.profile, settings(text), a, runtime)
    n = runs["before"]["data"]["n"]
    before, after = stages(runs["before"]), stages(runs["after"])
    print(f"\n{a.checkpoint}: {n} test images, {runtime.precision}, CPU {cpu_kind()}")
    print(
        f"{'stage':28s} {'grads before':>12s} {'after':>8s} {'ratio':>6s}  {'fwd before':>10s} {'after':>8s}"
        f"  {'s before':>8s} {'after':>7s} {'ratio':>6s}"
    )
    for key in before:
        gb, fb, sb = before[key]
        ga, fa, sa = after.get(key, (0, 0, 0.0))
        print(
            f"{key:28s} {gb:12d} {ga:8d} {gb / max(ga, 1):5.2f}x  {fb:10d} {fa:8d}  {sb:8.1f} {sa:7.1f}"
            f" {sb / max(sa, 1e-9):5.2f}x"
        )
    acc_b, acc_a = accuracies(runs["before"]), accuracies(runs["after"])
    print("\naccuracy (%)                   before    after   images moved")
    moved = {}
    for key, vb in acc_b.items():
        va = acc_a.get(key, float("nan"))
        moved[key] = round((va - vb) * n)
        print(f"{key:30s} {100 * vb:7.1f}  {100 * va:7.1f}   {moved[key]:+d}")
    if a.out:
        write_json(
            a.out,
            {
                "cpu": cpu_kind(),
                "precision": runtime.precision,
                "n": n,
                "before": {"settings": a.before, "stages": before, "accuracy": acc_b},
                "after": {"settings": a.after, "stages": after, "accuracy": acc_a},
                "images_moved": moved,
            },
        )


if __name__ == "__main__":
    main()
