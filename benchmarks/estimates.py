"""How good are `reproduce`'s time estimates? Estimate vs measured, per stage, on small runs (not a test).

    nice -n 5 .venv/bin/python benchmarks/estimates.py [--data phantom:n=60] [--out /tmp/estimates]

Runs `reproduce` on phantom data for a few small configurations (the smoke profile at two image sizes,
one with the default attack set at small budgets and no --limit, one with quick's evaluation budgets;
every model trained for 4 epochs so that it is a model: the smoke profile's one epoch on 8 images per
class leaves chance accuracy, and the cost model assumes a trained model), then reads each run's
estimate.json: every stage's first prediction (before any rescaling) beside its measured seconds, and
their ratio. The evaluation stages also print where their cost went (results.json "passes": headline
attacks, curves, sanity runs) so a miss can be traced to a part of the cost model
(fortify.pipeline.estimate.eval_passes). The whole benchmark takes a few minutes on two cores.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from fortify.fileio import read_json

CONFIGS = {
    # name: (profile, overrides)
    "smoke-32px": ("smoke", {"extras": [], "limit_per_class": None, "train.epochs": 4}),
    "smoke-48px": ("smoke", {"extras": [], "limit_per_class": None, "train.epochs": 4, "image_size": 48}),
    "custom-32px-full-set": (
        "smoke",
        {
            "extras": [],
            "limit_per_class": None,
            "train.epochs": 4,
            "evaluate.limit": None,
            "evaluate.pgd_steps": 10,
            "evaluate.strong_steps": 10,
            "evaluate.square_queries": 50,
            "evaluate.cw_steps": 10,
            "evaluate.eps_curve": [0, 2 / 255, 4 / 255, 8 / 255],
            "evaluate.curve_attacks": ["pgd:steps=5", "strong:steps=5,square_queries=20"],
            "evaluate.sanity_restarts": 2,
        },
    ),
    # quick's evaluation budgets (strong standard at 100 steps, Square 1000 queries, the default curve) on
    # a 32 px CNN: the evaluation dominates, as in the custom profile whose evaluation took 4x its estimate.
    "quick-budgets-32px": (
        "smoke",
        {
            "extras": [],
            "limit_per_class": None,
            "train.epochs": 4,
            "evaluate.limit": None,
            "evaluate.pgd_steps": 20,
            "evaluate.cw_steps": 20,
            "evaluate.cw_binary_steps": 3,
            "evaluate.strong_steps": 100,
            "evaluate.strong_version": "standard",
            "evaluate.square_queries": 1000,
            "evaluate.l2_steps": 50,
            "evaluate.eps_curve": [0, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255],
            "evaluate.curve_attacks": ["pgd:steps=5", "strong:steps=5,square_queries=100"],
            "evaluate.sanity_restarts": 2,
        },
    ),
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="phantom:n=60")
    p.add_argument("--out", default="/tmp/fortify-estimates")
    p.add_argument("--only", nargs="*", default=None, help="configuration names (default: all)")
    return p.parse_args()


def run_one(name: str, profile: str, overrides: dict, data: str, out: Path) -> list[dict]:
    from fortify.pipeline.reproduce import reproduce

    run_dir = out / name
    shutil.rmtree(run_dir, ignore_errors=True)
    t0 = time.perf_counter()
    reproduce(data, run_dir, profile=profile, progress=False, overrides=overrides, device="cpu")
    wall = time.perf_counter() - t0
    est = read_json(run_dir / "estimate.json")
    rows = []
    for s in est["stages"]:
        if s["measured"] is None or (s["seconds"] < 0.5 and s["measured"] < 0.5):
            continue
        rows.append({"config": name, "stage": s["name"], "estimate": s["seconds"], "measured": s["measured"]})
    rows.append(
        {"config": name, "stage": "(whole run)", "estimate": est["first_estimate_seconds"], "measured": wall}
    )
    for stage in ("normal", "adversarial"):
        results = run_dir / stage / "eval" / "results.json"
        if results.is_file():
            passes_table(f"{name} {stage}/eval", read_json(results), profile, overrides, est["machine"])
    return rows


def passes_table(label: str, r: dict, profile: str, overrides: dict, machine: dict) -> None:
    """Predicted (eval_passes) vs counted gradient evaluations per part, and seconds per counted pass."""
    from fortify.pipeline.estimate import ADVERSARIAL_ROBUST_SHARE, ROBUST_SHARE, eval_passes
    from fortify.pipeline.profiles import load_profile
    from fortify.pipeline.study_stages import attack_specs

    prof = load_profile(profile, overrides)
    ev = prof.evaluate
    curve = [(t, float(e)) for t in ev.curve_attacks for e in ev.eps_curve]
    n = int(r["data"]["n"])
    robust = ADVERSARIAL_ROBUST_SHARE if "adversarial" in label else ROBUST_SHARE
    reattack = machine["precision"] != "fp32"
    args = (ev.sanity_steps_factor, ev.sanity_restarts, ev.curve_cumulative, robust, reattack)
    pred = eval_passes(attack_specs(prof), curve, n, *args)
    counted = {k: r["passes"][k] for k in pred}
    print(f"  {label}: {n} images, clean {r['clean']['accuracy']:.2f}, {r['seconds_total']:.1f} s")
    for k, (g, f) in pred.items():
        c = counted[k]
        print(
            f"    {k:8} gradient evals predicted {g:9.0f} counted {c['gradient_evaluations']:9d}; "
            f"forwards predicted {f:9.0f} counted {c['forward_passes']:9d}"
        )
    grads = sum(c["gradient_evaluations"] for c in counted.values())
    fwds = sum(c["forward_passes"] for c in counted.values())
    modelled = grads * machine["gradient"] + fwds * machine["forward"]
    print(f"    counted passes x measured per-image speed = {modelled:.1f} s of {r['seconds_total']:.1f} s")


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    rows: list[dict] = []
    for name, (profile, overrides) in CONFIGS.items():
        if args.only and name not in args.only:
            continue
        rows += run_one(name, profile, overrides, args.data, out)
    print(f"\n{'config':24} {'stage':22} {'estimate s':>10} {'measured s':>10} {'ratio':>6}")
    for r in rows:
        ratio = r["measured"] / r["estimate"] if r["estimate"] > 0 else float("inf")
        print(f"{r['config']:24} {r['stage']:22} {r['estimate']:10.1f} {r['measured']:10.1f} {ratio:6.2f}")


if __name__ == "__main__":
    main()
