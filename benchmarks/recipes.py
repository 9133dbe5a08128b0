"""Training recipes compared on scan-grouped K folds, measured on each fold's VALIDATION split only.

Every recipe is a set of profile overrides (the dotted keys `fortify reproduce --set` takes) on a base
profile (quick by default). A normal recipe trains from scratch; an adversarial recipe fine-tunes the
normal model of the recipe it names in `from` (as the quick profile's adversarial stage does). Each
(recipe, fold) trains into OUT/<recipe>/fold-<i>/ and is skipped when its row exists, so an interrupted
comparison resumes. The test fold of each manifest is never loaded: recipes are chosen on validation,
and the winner is then measured once with `fortify reproduce --folds K` (the test folds).

    .venv/bin/python benchmarks/recipes.py --out /tmp/recipes --folds 5 --use-folds 0,1,2 \\
        --recipe quick --recipe epochs30 --recipe px160

Per row: clean validation accuracy of the LAST checkpoint (no selection on the split it is scored
on), balanced accuracy, benign recall, PGD-10 (L-inf) robust accuracy at each --eps, the raw-pixel
1-NN sentinel train -> val, and the seconds the fold took (with the load average, since the machine
is shared). The summary prints mean and standard deviation over the folds measured.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from fortify.attacks import pgd
from fortify.data import load_split, make_folds, save_manifest
from fortify.data.sentinel import leakage_sentinel
from fortify.errors import FortifyError
from fortify.evaluation.batches import predict
from fortify.fileio import read_json, write_json
from fortify.intervals import wilson_interval
from fortify.number_text import parse_number
from fortify.pipeline.profiles import load_profile
from fortify.pipeline.study_stages import train_config
from fortify.runtime import Runtime, cpu_kind, seed_everything
from fortify.training import load_model, train
from fortify.training.config import TrainConfig

DEFAULT_DATA = str(Path(__file__).resolve().parents[2] / "shared/datasets/iqothnccd")

# name -> {"from": normal recipe (adversarial recipes only), "init": "best" (default) or "last" (which
#          checkpoint of that normal recipe to fine-tune), "mode": defense, "set": profile overrides,
#          "pretrain": ssl_pretrain.pretrain keyword arguments (normal recipes: start from that checkpoint)}
RECIPES: dict[str, dict[str, Any]] = {
    # normal training (quick profile: ResNet18 128 px, AdamW OneCycle lr 2e-3, 20 epochs, flips)
    "quick": {"set": {}},
    "epochs10": {"set": {"normal.epochs": 10}},
    "epochs15": {"set": {"normal.epochs": 15}},
    "epochs30": {"set": {"normal.epochs": 30}},
    "epochs40": {"set": {"normal.epochs": 40}},
    "px160": {"set": {"image_size": 160}},
    "px192": {"set": {"image_size": 192}},
    "shift3": {"set": {"train.max_shift": 0.03}},
    "shift6": {"set": {"train.max_shift": 0.06}},
    "balanced": {"set": {"train.class_balanced": True}},
    "balanced-sampling": {"set": {"train.balanced_sampling": True}},
    "noaug": {"set": {"train.augment": False}},
    "lr1e-3": {"set": {"normal.lr": 0.001}},
    "lr4e-3": {"set": {"normal.lr": 0.004}},
    "resnet34": {"set": {"model": "resnet34"}},
    "smallcnn": {"set": {"model": "smallcnn"}},
    "ema": {"set": {"train.ema_decay": 0.98}},  # per step: an average over the last ~50 steps (~2 epochs)
    "label-smooth": {"set": {"train.label_smoothing": 0.1}},
    "ema-balanced": {"set": {"train.ema_decay": 0.98, "train.class_balanced": True}},
    "intensity": {"set": {"train.intensity_jitter": 0.2}},  # contrast/gamma +-20%, brightness +-0.1
    "rot5": {"set": {"train.max_rotation": 5.0}},
    "rot10": {"set": {"train.max_rotation": 10.0}},
    "zoom10": {"set": {"train.max_zoom": 0.1}},  # random resized crops: zoom in by up to 1.1x
    "zoom25": {"set": {"train.max_zoom": 0.25}},
    "mixup": {"set": {"normal.mixup_alpha": 0.2}},
    "px160-ls": {"set": {"image_size": 160, "train.label_smoothing": 0.1}},
    "px160-intensity": {"set": {"image_size": 160, "train.intensity_jitter": 0.2}},
    # SimCLR pretraining on the fold's own training images (benchmarks/ssl_pretrain.py), then quick's training
    "ssl": {"set": {}, "pretrain": {"epochs": 30}},
    # adversarial fine-tuning of the quick normal model (5 epochs, 3 attack steps, eps 2/255)
    "mixed": {"from": "quick", "mode": "mixed", "set": {}},
    # quick's adversarial stage on a normal model trained for fewer epochs (a cheaper quick profile)
    "mixed-e10": {"from": "epochs10", "mode": "mixed", "set": {}},
    "mixed-e15": {"from": "epochs15", "mode": "mixed", "set": {}},
    "pgd-at": {"from": "quick", "mode": "pgd", "set": {}},
    "trades": {"from": "quick", "mode": "trades", "set": {}},
    "mart": {"from": "quick", "mode": "mart", "set": {}},
    "pgd-at-eps4": {"from": "quick", "mode": "pgd", "set": {"adversarial.eps": 4 / 255}},
    "pgd-at-10ep": {"from": "quick", "mode": "pgd", "set": {"adversarial.epochs": 10}},
    "mixed-10ep": {"from": "quick", "mode": "mixed", "set": {"adversarial.epochs": 10}},
    "mixed-ema": {"from": "quick", "mode": "mixed", "set": {"adversarial.ema_decay": 0.98}},
    "pgd-at-awp": {"from": "quick", "mode": "pgd", "set": {"adversarial.awp_gamma": 5e-3}},
    "trades-awp": {"from": "quick", "mode": "trades", "set": {"adversarial.awp_gamma": 5e-3}},
    "mixed-awp": {"from": "quick", "mode": "mixed", "set": {"adversarial.awp_gamma": 5e-3}},
    "trades-eps4": {"from": "quick", "mode": "trades", "set": {"adversarial.eps": 4 / 255}},
    "pgd-at-awp-eps4": {
        "from": "quick",
        "mode": "pgd",
        "set": {"adversarial.awp_gamma": 5e-3, "adversarial.eps": 4 / 255},
    },
    "mixed-px160": {"from": "px160", "mode": "mixed", "set": {"image_size": 160}},
    # the two validation winners together: the best profile's defence on the 160 px model
    "px160-pgd-at-awp": {
        "from": "px160",
        "mode": "pgd",
        "set": {"image_size": 160, "adversarial.awp_gamma": 5e-3},
    },
    # the best profile's defence on the two normal recipes that gained clean accuracy on every fold
    "mixup-pgd-at-awp": {"from": "mixup", "mode": "pgd", "set": {"adversarial.awp_gamma": 5e-3}},
    "ssl-pgd-at-awp": {"from": "ssl", "mode": "pgd", "set": {"adversarial.awp_gamma": 5e-3}},
    "smallcnn-pgd-at-awp": {
        "from": "smallcnn",
        "mode": "pgd",
        "set": {"model": "smallcnn", "adversarial.awp_gamma": 5e-3},
    },
    "smallcnn-mixed": {"from": "smallcnn", "mode": "mixed", "set": {"model": "smallcnn"}},
    # resolution on the compact CNN: 160 px gained clean accuracy on every fold for ResNet18 (px160), and
    # the benign nodules are small; does the compact CNN (best's model) gain too, and keep it under PGD-AT?
    "smallcnn-px160": {"set": {"model": "smallcnn", "image_size": 160}},
    "smallcnn-px160-pgd-at-awp": {
        "from": "smallcnn-px160",
        "mode": "pgd",
        "set": {"model": "smallcnn", "image_size": 160, "adversarial.awp_gamma": 5e-3},
    },
    # best's defence with class-balanced sampling in the fine-tune: can PGD-AT keep the benign class?
    "smallcnn-pgd-at-awp-bs": {
        "from": "smallcnn",
        "mode": "pgd",
        "set": {"model": "smallcnn", "adversarial.awp_gamma": 5e-3, "train.balanced_sampling": True},
    },
    # a milder benign fix than balanced sampling: the fine-tune's loss weighted by inverse class frequency
    "smallcnn-pgd-at-awp-cb": {
        "from": "smallcnn",
        "mode": "pgd",
        "set": {"model": "smallcnn", "adversarial.awp_gamma": 5e-3, "train.class_balanced": True},
    },
    # the same defence fine-tuning the normal model's LAST epoch: benchmarks/selection.py found that
    # selecting the normal epoch on validation accuracy gives up the benign class (cross-fit on validation)
    "smallcnn-last-pgd-at-awp": {
        "from": "smallcnn",
        "init": "last",
        "mode": "pgd",
        "set": {"model": "smallcnn", "adversarial.awp_gamma": 5e-3},
    },
    # best's fine-tune, one lever at a time, aimed at the 4/255 target: TRADES + AWP (the best 4/255 row on
    # ResNet18), a training budget above the 2/255 headline, a longer fine-tune, a stronger training attack
    "smallcnn-trades-awp": {
        "from": "smallcnn",
        "mode": "trades",
        "set": {"model": "smallcnn", "adversarial.awp_gamma": 5e-3},
    },
    "smallcnn-pgd-at-awp-eps4": {
        "from": "smallcnn",
        "mode": "pgd",
        "set": {"model": "smallcnn", "adversarial.awp_gamma": 5e-3, "adversarial.eps": 4 / 255},
    },
    "smallcnn-pgd-at-awp-10ep": {
        "from": "smallcnn",
        "mode": "pgd",
        "set": {"model": "smallcnn", "adversarial.awp_gamma": 5e-3, "adversarial.epochs": 10},
    },
    "smallcnn-pgd-at-awp-s7": {
        "from": "smallcnn",
        "mode": "pgd",
        "set": {"model": "smallcnn", "adversarial.awp_gamma": 5e-3, "adversarial.attack_steps": 7},
    },
    # class-balanced sampling kept in the fine-tune: does it hold on to the benign class PGD-AT gives up?
    "pgd-at-awp-bs": {
        "from": "quick",
        "mode": "pgd",
        "set": {"adversarial.awp_gamma": 5e-3, "train.balanced_sampling": True},
    },
    "ssl-pgd-at-awp-bs": {
        "from": "ssl",
        "mode": "pgd",
        "set": {"adversarial.awp_gamma": 5e-3, "train.balanced_sampling": True},
    },
    "rot5-pgd-at-awp": {
        "from": "rot5",
        "mode": "pgd",
        "set": {"train.max_rotation": 5.0, "adversarial.awp_gamma": 5e-3},
    },
}


# Resolution sweep (issue 35): the compact CNN and ResNet18 at 48-128 px, normal training and `best`'s
# defence (PGD-AT + AWP fine-tune, last epoch kept). Smaller inputs: fewer directions to attack, 4x cheaper
# per halving; the gradient-free check and `strong` must confirm any gain before a profile adopts it.
for _model in ("smallcnn", "resnet18"):
    for _px in (48, 64, 96, 128):
        _normal = f"{_model}-px{_px}"
        RECIPES[_normal] = {"set": {"model": _model, "image_size": _px}}
        RECIPES[f"{_normal}-pgd-at-awp"] = {
            "from": _normal,
            "mode": "pgd",
            "set": {
                "model": _model,
                "image_size": _px,
                "adversarial.awp_gamma": 5e-3,
                "adversarial.select_on": "last",
            },
        }


def append_row(rows_path: Path, row: dict[str, Any]) -> list[dict[str, Any]]:
    """Add one row to rows.json under an exclusive lock, re-reading the file first: two comparisons
    may share an --out (one per core), and the rows each loaded at start would overwrite the other's."""
    with open(rows_path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows: list[dict[str, Any]] = read_json(rows_path) if rows_path.exists() else []
        rows.append(row)
        write_json(rows_path, rows)
    return rows


def benign_index(classes: list[str]) -> int:
    """The benign class's index (the dataset spells its folder `Bengin cases`)."""
    return next(i for i, c in enumerate(classes) if c.lower().startswith(("benign", "bengin")))


def class_recalls(hit: list[bool], y: list[int]) -> dict[int, float]:
    """Per class present in y: the share of its images with hit True (recall when hit = prediction right)."""
    return {k: sum(h for h, t in zip(hit, y, strict=True) if t == k) / y.count(k) for k in sorted(set(y))}


def fold_manifests(data: str, out: Path, k: int, prof, cache_dir: str | None) -> list[Path]:
    """The K scan-grouped fold manifests (made once, with the profile's seed and validation share)."""
    paths = [out / "folds" / f"fold-{i}.json" for i in range(k)]
    if all(p.exists() for p in paths):
        return paths
    val_fraction = prof.fractions[1] / (prof.fractions[0] + prof.fractions[1])
    manifests = make_folds(
        data, k, seed=prof.seed, val_fraction=val_fraction, image_size=prof.image_size, cache_dir=cache_dir
    )
    for p, m in zip(paths, manifests, strict=True):
        p.parent.mkdir(parents=True, exist_ok=True)
        save_manifest(m, p)
    return paths


def recipe_config(
    name: str, fold: int, manifest: Path, args: argparse.Namespace, root: Path, init_from: Path
) -> tuple[TrainConfig, Any]:
    """The TrainConfig (training into root/<stage>) and profile of recipe `name` on one fold; an
    adversarial recipe fine-tunes init_from/<its normal recipe>/fold-<fold>/normal/best.safetensors."""
    recipe = RECIPES[name]
    stage = "adversarial" if "from" in recipe else "normal"
    prof = load_profile(args.profile, recipe["set"])
    cfg = train_config(
        prof, stage, recipe.get("mode", "standard"), args.data, root, args.device, args.precision
    )
    cfg.split, cfg.cache_dir = str(manifest), args.cache_dir
    if stage == "adversarial":  # fine-tune the named normal recipe's model of the same fold
        checkpoint = f"{recipe.get('init', 'best')}.safetensors"  # "last": the normal run's final epoch
        cfg.init = str(init_from / recipe["from"] / f"fold-{fold}" / "normal" / checkpoint)
        if not Path(cfg.init).exists():
            raise SystemExit(f"recipe {name}: run the normal recipe {recipe['from']!r} on fold {fold} first")
    return cfg, prof


def run_recipe_fold(
    name: str, fold: int, manifest: Path, args: argparse.Namespace, runtime: Runtime
) -> dict[str, Any]:
    recipe = RECIPES[name]
    root = args.out / name / f"fold-{fold}"
    cfg, prof = recipe_config(name, fold, manifest, args, root, args.out)
    stage = "adversarial" if "from" in recipe else "normal"
    pretrain_s = 0.0
    if "pretrain" in recipe:  # self-supervised on this fold's training images only
        from ssl_pretrain import pretrain

        t0 = time.perf_counter()
        cfg.init = str(
            pretrain(
                manifest,
                root / "ssl",
                data=args.data,
                model_name=prof.model,
                image_size=prof.image_size,
                seed=prof.seed,
                runtime=runtime,
                cache_dir=args.cache_dir,
                **recipe["pretrain"],
            )
        )
        pretrain_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    train(cfg, resume=True, progress=False)
    train_s = time.perf_counter() - t0 + pretrain_s
    model, info = load_model(Path(cfg.out) / "last.safetensors")
    model = runtime.prepare_model(model)
    parts = load_split(
        manifest,
        args.data,
        image_size=prof.image_size,
        limit_per_class=prof.limit_per_class,
        cache_dir=args.cache_dir,
    )
    val = parts["val"]
    x, y = val.tensors()
    pred, _ = predict(model, x, runtime, batch_size=64)
    classes = val.classes
    benign = benign_index(classes)
    recalls = class_recalls((pred == y).tolist(), y.tolist())
    row: dict[str, Any] = {
        "recipe": name,
        "fold": fold,
        "stage": stage,
        "mode": cfg.mode,
        "epoch": info.get("epoch"),
        "n_val": len(val),
        "clean": float((pred == y).float().mean()),
        "balanced": statistics.mean(recalls.values()),  # mean recall over the classes validation holds
        "benign_recall": recalls.get(benign, 0.0),
        "benign_n": int((y == benign).sum()),
        "sentinel": leakage_sentinel(parts["train"], val)["accuracy"],
    }
    t1 = time.perf_counter()
    for eps in args.eps:
        seed_everything(0)
        correct = 0
        for b in torch.arange(len(val)).split(64):
            xb, yb = runtime.to_device(x[b]), y[b].to(runtime.device)
            with runtime.autocast():
                adv = pgd(model, xb, yb, eps=eps, steps=args.pgd_steps)
            with torch.no_grad(), runtime.autocast():
                correct += int((model(adv).argmax(1) == yb).sum())
        row[f"pgd{args.pgd_steps}@{round(eps * 255)}/255"] = correct / len(val)
    row.update(
        train_seconds=round(train_s, 1),
        eval_seconds=round(time.perf_counter() - t1, 1),
        load_average=round(os.getloadavg()[0], 2),
        config=str(Path(cfg.out) / "config.yaml"),
    )
    return row


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for name in dict.fromkeys(r["recipe"] for r in rows):
        mine = [r for r in rows if r["recipe"] == name]
        s: dict[str, Any] = {"recipe": name, "folds": [r["fold"] for r in mine]}
        for key in mine[0]:
            vals = [r[key] for r in mine]
            if key in ("fold", "epoch", "n_val", "benign_n") or not all(isinstance(v, float) for v in vals):
                continue
            s[key] = (statistics.mean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0)
        s["minutes_per_fold"] = statistics.mean(r["train_seconds"] + r["eval_seconds"] for r in mine) / 60
        # pooled over the folds' validation images: benign is ~14 scans' slices per fold, so one recall per
        # fold is noisy; the pooled count and its Wilson interval say how sure the benign figure is
        for key, n_key in (("clean", "n_val"), ("benign_recall", "benign_n")):
            k, n = sum(round(r[key] * r[n_key]) for r in mine), sum(r[n_key] for r in mine)
            interval = list(wilson_interval(k, n))
            s[f"{key}_pooled"] = {"correct": k, "n": n, "rate": k / n, "wilson95": interval}
        out.append(s)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--profile", default="quick", help="base profile (name or YAML file)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--use-folds", default=None, help="comma list of fold indices (default: all)")
    p.add_argument("--recipe", action="append", choices=sorted(RECIPES), help="repeatable")
    p.add_argument("--eps", action="append", help="PGD budget, repeatable (default 2/255 and 4/255)")
    p.add_argument("--pgd-steps", type=int, default=10)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--summary-only", action="store_true", help="print the table of rows already measured")
    args = p.parse_args()
    args.eps = [parse_number(e, "--eps", lo=0, hi=1) for e in (args.eps or ["2/255", "4/255"])]
    recipes = args.recipe or ["quick"]
    runtime = Runtime.resolve(args.device, args.precision)
    rows_path = args.out / "rows.json"
    rows: list[dict[str, Any]] = read_json(rows_path) if rows_path.exists() else []
    if not args.summary_only:
        prof = load_profile(args.profile)
        manifests = fold_manifests(args.data, args.out, args.folds, prof, args.cache_dir)
        use = range(args.folds) if args.use_folds is None else [int(i) for i in args.use_folds.split(",")]
        print(f"CPU: {cpu_kind()} ({platform.processor() or platform.machine()}), {runtime.describe()}")
        for name in recipes:
            for fold in use:
                if any(r["recipe"] == name and r["fold"] == fold for r in rows):
                    continue
                print(f"{name}, fold {fold}: running (a JSON row follows when it is measured)", flush=True)
                row = run_recipe_fold(name, fold, manifests[fold], args, runtime)
                rows = append_row(rows_path, row)
                print(json.dumps(row), flush=True)
    measured = [r for r in rows if r["recipe"] in recipes] if args.recipe else rows
    table = summarize(measured)
    write_json(args.out / "summary.json", {"cpu": cpu_kind(), "recipes": table})
    keys = [k for k in (table[0] if table else {}) if isinstance(table[0][k], tuple)]
    width = max([len("recipe")] + [len(s["recipe"]) for s in table])
    print(f"{'recipe':{width}s}  folds  " + "  ".join(f"{k:>16s}" for k in keys) + "  min/fold")
    for s in table:
        scale = {k: 1 if "seconds" in k or k == "load_average" else 100 for k in keys}
        cells = "  ".join(f"{scale[k] * s[k][0]:7.1f} ± {scale[k] * s[k][1]:5.1f}" for k in keys)
        print(f"{s['recipe']:{width}s}  {len(s['folds']):5d}  {cells}  {s['minutes_per_fold']:8.1f}")
    for s in table:
        pooled = [
            f"{key} {p['correct']}/{p['n']} = {100 * p['rate']:.1f}% "
            f"[{100 * p['wilson95'][0]:.1f}, {100 * p['wilson95'][1]:.1f}]"
            for key, p in ((k, s[f"{k}_pooled"]) for k in ("clean", "benign_recall"))
        ]
        print(f"{s['recipe']:{width}s}  pooled over folds: " + "; ".join(pooled))


if __name__ == "__main__":
    try:
        main()
    except FortifyError as err:  # a bad path or setting: one line, not a traceback
        raise SystemExit(f"error: {err}") from None
