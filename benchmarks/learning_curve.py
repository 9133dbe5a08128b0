"""Learning curves: how accuracy grows with the number of training SCANS, on validation folds only.

Where is this dataset's ceiling: would more scans of the same kind close the gap to 92%, or is it the
method? For each fold of `benchmarks/recipes.py` (same K scan-grouped manifests, test folds never loaded)
and each fraction f, the fold's training set is cut to a random f of its scans (whole scans, drawn per
class so every class keeps at least one; the split's own leakage groups, so a scan is never cut), then a
normal recipe is trained on it and an adversarial recipe fine-tunes that model, exactly as recipes.py
does. Validation stays the fold's whole validation split. Rows (clean, PGD-10 at each eps, benign recall)
go to OUT/rows.json and are skipped when present, so an interrupted run resumes.

    .venv/bin/python benchmarks/learning_curve.py --out /tmp/lc --recipes-out /tmp/recipes \\
        --normal smallcnn-px64 --adversarial smallcnn-px64-pgd-at-awp --use-folds 0,1,2

The summary fits accuracy(n) = a - b * n^(-c) (an inverse power law, the usual shape of learning curves)
to the mean over folds at each size and prints a (the plateau) and the predicted accuracy at 2x and 4x
the scans: a plausible reading of the curve, not a promise (four points, three folds).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import numpy as np
from recipes import DEFAULT_DATA, fold_manifests, run_recipe_fold

from fortify.data import load_manifest, save_manifest
from fortify.data.dicom import DEFAULT_WINDOW
from fortify.data.groups import NEAR_DUP_THRESHOLD, SCAN_LINK_THRESHOLD
from fortify.data.split import _prepare
from fortify.fileio import read_json, write_json
from fortify.intervals import wilson_interval
from fortify.number_text import parse_number
from fortify.pipeline.profiles import load_profile
from fortify.runtime import Runtime, cpu_kind


def scan_of_path(data: str, image_size: int, cache_dir: str | None) -> dict[str, int]:
    """Each image path -> the index of its leakage group (reconstructed scan + near duplicates), as the
    split itself groups them."""
    prep = _prepare(
        data,
        image_size=image_size,
        cache_dir=cache_dir,
        progress=False,
        near_dup_threshold=NEAR_DUP_THRESHOLD,
        grouping="scan",
        scan_threshold=SCAN_LINK_THRESHOLD,
        window=DEFAULT_WINDOW,
    )
    return {prep.ds.paths[int(prep.kept[k])]: g for g, members in enumerate(prep.groups) for k in members}


def subset_manifest(manifest: Path, fraction: float, seed: int, scans: dict[str, int], out: Path) -> dict:
    """The fold's manifest with its training split cut to `fraction` of its scans (per class)."""
    m = load_manifest(manifest)
    train = m.splits["train"]
    by_class: dict[int, list[int]] = {}
    for e in train:
        by_class.setdefault(e["label"], [])
        if scans[e["path"]] not in by_class[e["label"]]:
            by_class[e["label"]].append(scans[e["path"]])
    rng = np.random.default_rng(seed)
    keep: set[int] = set()
    for label in sorted(by_class):
        groups = sorted(by_class[label])
        take = max(1, round(fraction * len(groups)))
        keep.update(int(g) for g in rng.permutation(groups)[:take])
    m.splits["train"] = [e for e in train if scans[e["path"]] in keep]
    out.parent.mkdir(parents=True, exist_ok=True)
    save_manifest(m, out)
    return {"train_scans": len(keep), "train_images": len(m.splits["train"])}


def fit_power_law(n: list[float], acc: list[float]) -> dict[str, Any] | None:
    """Least squares a - b * n^(-c), c on a grid (a, b linear given c); None with fewer than 3 sizes.
    A plateau a above 1 (100%) means these points do not identify one: the curve is still rising as
    fast as the noise lets us see, and `identified` says so (at_2x/at_4x are then not reported)."""
    if len(set(n)) < 3:
        return None
    x, y = np.asarray(n, float), np.asarray(acc, float)
    best = None
    for c in np.linspace(0.05, 3.0, 300):
        design = np.stack([np.ones_like(x), -(x ** (-c))], axis=1)
        (a, b), *_ = np.linalg.lstsq(design, y, rcond=None)
        err = float(((design @ np.array([a, b]) - y) ** 2).sum())
        if b >= 0 and (best is None or err < best[0]):
            best = (err, float(a), float(b), float(c))
    if best is None:
        return {"identified": False, "why": "accuracy does not rise with the number of scans"}
    _, a, b, c = best
    if a > 1.0:
        return {"identified": False, "why": f"fitted plateau {100 * a:.0f}% > 100%", "c": c}
    top = max(x)
    return {
        "identified": True,
        "plateau": a,
        "b": b,
        "c": c,
        "at_2x": a - b * (2 * top) ** (-c),
        "at_4x": a - b * (4 * top) ** (-c),
    }


def per_doubling(rows: list[dict[str, Any]], key: str) -> dict[str, float] | None:
    """Points of accuracy gained per doubling of the training scans: the slope of accuracy on
    log2(scans), fitted within each fold (mean and sd over folds): a plainer reading than the plateau."""
    slopes = []
    for fold in sorted({r["fold"] for r in rows}):
        mine = [r for r in rows if r["fold"] == fold]
        if len({r["train_scans"] for r in mine}) < 2:
            continue
        x = np.log2([r["train_scans"] for r in mine])
        slopes.append(float(np.polyfit(x, [r[key] for r in mine], 1)[0]))
    if not slopes:
        return None
    return {"mean": statistics.mean(slopes), "sd": statistics.stdev(slopes) if len(slopes) > 1 else 0.0}


def summarize(rows: list[dict[str, Any]], keys: list[str]) -> dict[str, Any]:
    """Per (stage, fraction): mean/sd over folds of each key, pooled Wilson interval; fits per stage."""
    out: dict[str, Any] = {"points": [], "fits": {}}
    for stage in ("normal", "adversarial"):
        mine = [r for r in rows if r["stage"] == stage]
        sizes = sorted({r["fraction"] for r in mine})
        for f in sizes:
            at = [r for r in mine if r["fraction"] == f]
            point: dict[str, Any] = {
                "stage": stage,
                "fraction": f,
                "folds": [r["fold"] for r in at],
                "train_scans": statistics.mean(r["train_scans"] for r in at),
            }
            for key in keys:
                vals = [r[key] for r in at]
                n_key = "benign_n" if key == "benign_recall" else "n_val"  # recall: over benign images only
                k = sum(round(r[key] * r[n_key]) for r in at)
                n = sum(r[n_key] for r in at)
                point[key] = {
                    "mean": statistics.mean(vals),
                    "sd": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                    "pooled_wilson95": list(wilson_interval(k, n)),
                }
            out["points"].append(point)
        for key in keys:
            pts = [p for p in out["points"] if p["stage"] == stage]
            fit = fit_power_law([p["train_scans"] for p in pts], [p[key]["mean"] for p in pts])
            out["fits"][f"{stage}/{key}"] = {"power_law": fit, "per_doubling": per_doubling(mine, key)}
    return out


def plot(summary: dict[str, Any], keys: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, stage in zip(axes, ("normal", "adversarial"), strict=True):
        pts = [p for p in summary["points"] if p["stage"] == stage]
        for i, key in enumerate(keys):
            colour = f"C{i}"  # the same colour for a measure in both panels, and for its fitted curve
            xs = [p["train_scans"] for p in pts]
            ys = [100 * p[key]["mean"] for p in pts]
            lo = [100 * (p[key]["mean"] - p[key]["pooled_wilson95"][0]) for p in pts]
            hi = [100 * (p[key]["pooled_wilson95"][1] - p[key]["mean"]) for p in pts]
            ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=key, color=colour)
            fit = (summary["fits"].get(f"{stage}/{key}") or {}).get("power_law")
            if fit and fit["identified"]:
                grid = np.linspace(min(xs), 2 * max(xs), 100)  # up to twice the scans measured
                ax.plot(
                    grid,
                    100 * (fit["plateau"] - fit["b"] * grid ** (-fit["c"])),
                    "--",
                    alpha=0.5,
                    color=colour,
                )
        ax.set_title(f"{stage} model")
        ax.set_xlabel("training scans")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation accuracy (%)")
    axes[0].legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--recipes-out", type=Path, required=True, help="recipes.py --out: its folds and 100%% rows"
    )
    p.add_argument("--profile", default="quick")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--use-folds", default="0,1,2")
    p.add_argument("--fractions", default="0.25,0.5,0.75")
    p.add_argument("--normal", required=True)
    p.add_argument("--adversarial", required=True)
    p.add_argument("--eps", action="append")
    p.add_argument("--pgd-steps", type=int, default=10)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--summary-only", action="store_true")
    args = p.parse_args()
    args.eps = [parse_number(e, "--eps", lo=0, hi=1) for e in (args.eps or ["2/255"])]
    keys = ["clean", *[f"pgd{args.pgd_steps}@{round(e * 255)}/255" for e in args.eps], "benign_recall"]
    rows_path = args.out / "rows.json"
    rows: list[dict[str, Any]] = read_json(rows_path) if rows_path.exists() else []
    prof = load_profile(args.profile)
    folds = fold_manifests(args.data, args.recipes_out, args.folds, prof, args.cache_dir)
    use = [int(i) for i in args.use_folds.split(",")]
    full = read_json(args.recipes_out / "rows.json") if (args.recipes_out / "rows.json").exists() else []
    scans = scan_of_path(args.data, prof.image_size, args.cache_dir)
    if not args.summary_only:
        runtime = Runtime.resolve(args.device, args.precision)
        print(f"CPU: {cpu_kind()}, {runtime.describe()}", flush=True)
        for fraction in [float(f) for f in args.fractions.split(",")]:
            for fold in use:
                sub = args.out / "manifests" / f"frac-{fraction:g}" / f"fold-{fold}.json"
                size = subset_manifest(folds[fold], fraction, 1000 + fold, scans, sub)
                args.out_fraction = args.out / f"frac-{fraction:g}"
                for name in (args.normal, args.adversarial):
                    if any(
                        r["recipe"] == name and r["fold"] == fold and r["fraction"] == fraction for r in rows
                    ):
                        continue
                    run_args = argparse.Namespace(**{**vars(args), "out": args.out_fraction})
                    row = run_recipe_fold(name, fold, sub, run_args, runtime)
                    row.update(fraction=fraction, **size)
                    rows.append(row)
                    write_json(rows_path, rows)
                    print(row, flush=True)
    # the 100% points are recipes.py's own rows (the whole training split of each fold)
    n_full = {
        fold: subset_manifest(
            folds[fold], 1.0, 0, scans, args.out / "manifests" / "frac-1" / f"fold-{fold}.json"
        )
        for fold in use
    }
    pooled = rows + [
        {**r, "fraction": 1.0, **n_full[r["fold"]]}
        for r in full
        if r["recipe"] in (args.normal, args.adversarial) and r["fold"] in use
    ]
    summary = summarize(pooled, keys)
    summary["recipes"] = {"normal": args.normal, "adversarial": args.adversarial}
    write_json(args.out / "summary.json", summary)
    plot(summary, keys, args.out / "learning_curve.png")
    for pt in summary["points"]:
        cells = ", ".join(f"{k} {100 * pt[k]['mean']:.1f} ± {100 * pt[k]['sd']:.1f}" for k in keys)
        print(f"{pt['stage']:11s} {pt['fraction']:.2f} ({pt['train_scans']:.0f} scans): {cells}")
    for name, fits in summary["fits"].items():
        law, slope = fits["power_law"], fits["per_doubling"]
        text = f"{name}:"
        if slope:
            text += f" {100 * slope['mean']:+.1f} ± {100 * slope['sd']:.1f} points per doubling of scans;"
        if law and law["identified"]:
            pct = {k: f"{100 * law[k]:.1f}" for k in ("plateau", "at_2x", "at_4x")}
            text += f" plateau {pct['plateau']}, at 2x {pct['at_2x']}, at 4x {pct['at_4x']}"
        elif law:
            text += f" no plateau identified ({law['why']})"
        print(text)


if __name__ == "__main__":
    main()
