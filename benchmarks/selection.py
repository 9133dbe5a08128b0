"""Which epoch to keep? Checkpoint-selection rules compared honestly, by cross-fitting on validation.

Training keeps the epoch with the best validation score. On ~148 validation images (~14 benign) the
rule matters: accuracy can be won by calling every benign scan normal. This benchmark trains a recipe
of benchmarks/recipes.py once per fold (the same run recipes.py trains, to the bit), keeps every
epoch's weights, and records each epoch's per-image predictions and losses on the fold's validation
and test images (clean, and PGD-10 at --eps for an adversarial recipe).

A rule picks its epoch on one half of the validation images and is scored on the other half (halves
are whole scan groups, drawn --repeats times; both directions), so no rule is scored on the images it
selected on. Rules:
    last      the final epoch (no selection)
    accuracy  fortify's default: best clean accuracy (adversarial: robust accuracy, then clean)
    balanced  best balanced accuracy, the mean per-class recall (adversarial: robust balanced, then clean)
Ties go to the lower validation loss, as in the training loop. The test images are never used to
choose. Each rule's test-fold figure (the epoch `fortify train --select-on` keeps, read from the run's
own metrics.jsonl) is printed after the cross-fit, as the reference for the rule the cross-fit picks:
choose on the first table, report from the second.

    .venv/bin/python benchmarks/selection.py --out /tmp/selection --folds 5 --recipe smallcnn
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recipes import (  # noqa: E402
    DEFAULT_DATA,
    RECIPES,
    benign_index,
    class_recalls,
    fold_manifests,
    recipe_config,
)

from fortify.attacks import pgd  # noqa: E402
from fortify.data import load_split  # noqa: E402
from fortify.data.groups import leakage_groups  # noqa: E402
from fortify.errors import FortifyError  # noqa: E402
from fortify.evaluation.batches import predict  # noqa: E402
from fortify.fileio import read_json, read_jsonl, write_json  # noqa: E402
from fortify.number_text import parse_number  # noqa: E402
from fortify.pipeline.profiles import load_profile  # noqa: E402
from fortify.runtime import Runtime, cpu_kind  # noqa: E402
from fortify.training import load_model, train  # noqa: E402

RULES = ("last", "accuracy", "balanced")


def _robust_correct(model, x, y, runtime: Runtime, eps: float, steps: int) -> list[bool]:
    # The same PGD starts every epoch, from a private generator: this runs inside training's epoch
    # callback, and touching the global RNG there would change the training run being recorded.
    gen = torch.Generator().manual_seed(0)
    out = []
    for b in torch.arange(len(x)).split(64):
        xb, yb = runtime.to_device(x[b]), y[b].to(runtime.device)
        with runtime.autocast():
            adv = pgd(model, xb, yb, eps=eps, steps=steps, generator=gen)
        with torch.no_grad(), runtime.autocast():
            out += (model(adv).argmax(1) == yb).cpu().tolist()
    return out


def _clean_predictions(model, x, y, runtime: Runtime, split: str) -> dict[str, list]:
    """Predicted class and cross-entropy (-log p of the label) of every image."""
    pred, probs = predict(model, x, runtime, batch_size=64)
    nll = -probs.gather(1, y.view(-1, 1)).clamp_min(1e-12).log().view(-1)
    return {f"{split}_pred": pred.tolist(), f"{split}_nll": nll.tolist()}


def record_epochs(name: str, fold: int, manifest: Path, args, runtime: Runtime) -> dict[str, Any]:
    """Train the recipe on one fold, keeping per epoch its weights and per-image predictions."""
    root = args.out / name / f"fold-{fold}"
    path = root / "epochs.json"
    rec: dict[str, Any] = read_json(path) if path.exists() else {}
    cfg, prof = recipe_config(name, fold, manifest, args, root, args.init_from)
    adversarial = "from" in RECIPES[name]
    parts = load_split(manifest, args.data, image_size=prof.image_size, cache_dir=args.cache_dir)
    if not rec:
        val = parts["val"]
        groups = leakage_groups(val.fingerprints, val.labels.tolist(), val.paths, val.classes).groups
        rec = {
            "recipe": name,
            "fold": fold,
            "classes": val.classes,
            "config": str(Path(cfg.out) / "config.yaml"),
        }
        rec["val_group"] = [0] * len(val)
        for g, members in enumerate(groups):
            for i in members:
                rec["val_group"][i] = g
        rec.update(val_y=val.labels.tolist(), test_y=parts["test"].labels.tolist(), epochs=[])

    def record(epoch: int) -> None:
        """Keep epoch's weights (copied from last.*) and its per-image predictions."""
        saved = root / f"epoch-{epoch}.safetensors"
        if len(rec["epochs"]) >= epoch:
            return
        if not saved.exists():
            last = Path(cfg.out) / "last.safetensors"
            shutil.copyfile(last, saved)  # weights + metadata, loadable as is
            shutil.copyfile(last.with_suffix(".json"), saved.with_suffix(".json"))
        model, info = load_model(saved)
        if info["epoch"] != epoch:
            raise SystemExit(f"{saved} holds epoch {info['epoch']}, not {epoch}: delete {root} and rerun")
        model = runtime.prepare_model(model)
        row: dict[str, Any] = {"epoch": epoch}
        for split in ("val", "test"):
            x, y = parts[split].tensors()
            row.update(_clean_predictions(model, x, y, runtime, split))
            if adversarial:
                row[f"{split}_robust"] = _robust_correct(model, x, y, runtime, args.eps, args.pgd_steps)
        rec["epochs"].append(row)
        write_json(path, rec)
        print(f"{name} fold {fold} epoch {epoch}/{cfg.epochs}", flush=True)

    # epochs finished before an interruption (weights kept, predictions not yet recorded)
    for epoch in range(len(rec["epochs"]) + 1, cfg.epochs + 1):
        if (root / f"epoch-{epoch}.safetensors").exists():
            record(epoch)

    def record_isolated(epoch: int, _seconds: float) -> None:
        # Runs inside training: building the model to score (weight init) draws from the global RNG,
        # so fork it, or the recorded run would differ from an uninterrupted one from the next epoch on.
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            record(epoch)
        random.setstate(py_state)
        np.random.set_state(np_state)

    # one training run; the callback runs after each epoch's last.* is written
    train(cfg, resume=True, progress=False, on_epoch=record_isolated)
    for epoch in range(len(rec["epochs"]) + 1, cfg.epochs + 1):  # killed between save and copy
        record(epoch)
    return rec


def _scores(rec: dict, epoch_row: dict, split: str, idx: list[int]) -> dict[str, float]:
    """Clean accuracy, balanced accuracy (mean recall over the classes present), benign recall, and for
    adversarial recipes robust accuracy and robust balanced accuracy, on the images idx of split."""
    y = [rec[f"{split}_y"][i] for i in idx]
    hit = [epoch_row[f"{split}_pred"][i] == t for i, t in zip(idx, y, strict=True)]
    recalls = class_recalls(hit, y)
    out = {
        "clean": sum(hit) / len(y),
        "balanced": statistics.mean(recalls.values()),
        "benign": recalls.get(benign_index(rec["classes"]), float("nan")),
    }
    if f"{split}_robust" in epoch_row:
        rob = [epoch_row[f"{split}_robust"][i] for i in idx]
        out["robust"] = sum(rob) / len(rob)
        out["robust_balanced"] = statistics.mean(class_recalls(rob, y).values())
    return out


def choose(rule: str, rec: dict, idx: list[int]) -> dict:
    """The epoch row `rule` keeps when it sees only the validation images idx."""
    rows = rec["epochs"]
    if rule == "last":
        return rows[-1]
    key = (lambda s: [s["clean"]]) if rule == "accuracy" else (lambda s: [s["balanced"]])
    if "val_robust" in rows[0]:
        key = (
            (lambda s: [s["robust"], s["clean"]])
            if rule == "accuracy"
            else (lambda s: [s["robust_balanced"], s["balanced"]])
        )
    # ties (frequent: ~74 images per half) go to the lower mean loss, as in the training loop
    return max(rows, key=lambda r: [*key(_scores(rec, r, "val", idx)), -_mean_nll(r, idx)])


def _mean_nll(row: dict, idx: list[int]) -> float:
    return statistics.mean(row["val_nll"][i] for i in idx) if "val_nll" in row else 0.0


def loop_choice(rule: str, rec: dict, metrics: list[dict]) -> dict:
    """The epoch row `fortify train --select-on` keeps (from its own metrics.jsonl: for adversarial
    recipes its robust figures are PGD-5 at the training eps, not this benchmark's PGD-10)."""
    if rule == "last":
        return rec["epochs"][-1]
    suffix = "_bal_acc" if rule == "balanced" else "_acc"
    fields = [f"val_clean{suffix}"]
    if metrics[0].get("val_robust_acc") is not None:
        fields.insert(0, f"val_robust{suffix}")
    best = max(metrics, key=lambda m: [*(m[f] for f in fields), -m["val_loss"]])
    return rec["epochs"][best["epoch"] - 1]


def cross_fit(rec: dict, repeats: int, seed: int) -> dict[str, dict[str, float]]:
    """Mean held-out-half scores of each rule over `repeats` random halvings of the scan groups."""
    groups = sorted(set(rec["val_group"]))
    rng = random.Random(seed)
    sums: dict[str, dict[str, list[float]]] = {r: {} for r in RULES}
    for _ in range(repeats):
        rng.shuffle(groups)
        half = set(groups[: len(groups) // 2])
        a = [i for i, g in enumerate(rec["val_group"]) if g in half]
        b = [i for i, g in enumerate(rec["val_group"]) if g not in half]
        for pick, score in ((a, b), (b, a)):
            for rule in RULES:
                s = _scores(rec, choose(rule, rec, pick), "val", score)
                for k, v in s.items():
                    if v == v:  # a half without benign images has no benign recall
                        sums[rule].setdefault(k, []).append(v)
    return {r: {k: statistics.mean(v) for k, v in m.items()} for r, m in sums.items()}


def print_table(per_fold: list[dict], part: str) -> None:
    """Mean ± sd over folds of each rule's scores (in %); the test table also lists the chosen epochs."""
    keys = [k for k in per_fold[0][part]["last"] if k != "epoch"]
    print(f"{'rule':9s} {'epochs':>14s} " + " ".join(f"{k:>15s}" for k in keys))
    for rule in RULES:
        epochs = ",".join(str(f[part][rule].get("epoch", "")) for f in per_fold).strip(",")
        cells = []
        for k in keys:
            v = [100 * f[part][rule][k] for f in per_fold]
            sd = statistics.stdev(v) if len(v) > 1 else 0.0
            cells.append(f"{statistics.mean(v):7.1f} ± {sd:5.1f}")
        print(f"{rule:9s} {epochs:>14s} " + " ".join(cells))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--init-from",
        type=Path,
        default=Path("/tmp/recipes"),
        help="recipes.py --out holding the normal models adversarial recipes fine-tune",
    )
    p.add_argument("--profile", default="quick")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--use-folds", default=None)
    p.add_argument("--recipe", action="append", choices=sorted(RECIPES), required=True)
    p.add_argument("--eps", default="2/255", help="PGD budget for adversarial recipes")
    p.add_argument("--pgd-steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=100)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--cache-dir", default=None)
    args = p.parse_args()
    args.eps = parse_number(args.eps, "--eps", lo=0, hi=1)
    runtime = Runtime.resolve(args.device, args.precision)
    manifests = fold_manifests(
        args.data, args.init_from, args.folds, load_profile(args.profile), args.cache_dir
    )
    use = range(args.folds) if args.use_folds is None else [int(i) for i in args.use_folds.split(",")]
    print(f"CPU: {cpu_kind()}, {runtime.describe()}")
    summary_path = args.out / "summary.json"  # one file for every recipe measured into --out
    summary: dict[str, Any] = read_json(summary_path) if summary_path.exists() else {"recipes": {}}
    summary.update(cpu=cpu_kind(), repeats=args.repeats)
    for name in args.recipe:
        per_fold = []
        for fold in use:
            rec = record_epochs(name, fold, manifests[fold], args, runtime)
            fit = cross_fit(rec, args.repeats, seed=fold)
            every = list(range(len(rec["test_y"])))
            test = {}
            stage = "adversarial" if "from" in RECIPES[name] else "normal"
            metrics = read_jsonl(args.out / name / f"fold-{fold}" / stage / "metrics.jsonl")
            for rule in RULES:
                row = loop_choice(rule, rec, metrics)
                test[rule] = {"epoch": row["epoch"], **_scores(rec, row, "test", every)}
            per_fold.append({"fold": fold, "cross_fit": fit, "test": test})
        summary["recipes"][name] = per_fold
        print(f"\n{name}: validation cross-fit (held-out half, mean of {args.repeats} x 2 halvings per fold)")
        print_table(per_fold, "cross_fit")
        print(
            f"{name}: test folds (each rule's epoch chosen on the whole validation split; not for choosing)"
        )
        print_table(per_fold, "test")
    write_json(summary_path, summary)
    print(json.dumps({"written": str(summary_path)}))


if __name__ == "__main__":
    try:
        main()
    except FortifyError as err:
        raise SystemExit(f"error: {err}") from None
