"""Training cost per mode, and the issue-4 target check on the test split.

Cost (default): times the training steps of every mode on the real data (same model, batch size,
image size and data for all), extrapolates seconds per epoch from the mean batch time, and prints
the ratio against `standard` and against the ideal (k+1) for k attack steps:

    .venv/bin/python benchmarks/training.py cost --data ../shared/datasets/iqothnccd --batches 4

Targets: test-split clean accuracy and PGD-20 (L-inf) robust accuracy of trained checkpoints:

    .venv/bin/python benchmarks/training.py targets RUN_DIR [RUN_DIR ...] --eps 2/255 --eps 4/255

Fit: does the model fit its own training set, and how does that carry to val/test? Trains `standard`
runs with fortify's own loop for each --max-shift value and prints train/val/test accuracy and benign
(smallest class) recall of the last checkpoint:

    .venv/bin/python benchmarks/training.py fit --max-shift 0 --max-shift 0.06 --epochs 20

Timing is wall clock on whatever else the machine is doing: run it on an idle machine for
numbers to quote, and compare ratios (measured in one run, interleaved) rather than absolutes.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch

from fortify.attacks import pgd
from fortify.data import load_split, make_split, save_manifest
from fortify.errors import FortifyError
from fortify.evaluation.batches import predict
from fortify.models import build_model
from fortify.number_text import parse_number
from fortify.runtime import Runtime, seed_everything
from fortify.training import MODES, TrainConfig, load_model, train
from fortify.training.recipes import training_step_loss


def parse_eps(text: str) -> float:
    return parse_number(text, "--eps", lo=0, hi=1)


def ideal_ratio(mode: str, k: int) -> float:
    """Forward+backward passes per step relative to standard, counting a batch of 2N as 2."""
    return {
        "standard": 1.0,
        "fast": 2.0,  # one attack step + training on the adversarial batch
        "pgd": k + 1.0,
        "trades": k + 2.0 + 0.33,  # k KL steps (+ a clean forward) + training on clean+adv (2N)
        "mart": k + 2.0,  # k PGD steps + training on clean+adv (2N)
        "mixed": (1 + k + k) / 3 + 2.0,  # rotation FGSM/PGD-k/CW-k + training on clean+adv (2N)
    }[mode]


def cost(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    runtime = Runtime.resolve(args.device, args.precision)
    split = make_split(args.data, image_size=args.image_size, cache_dir=args.cache_dir)
    train = load_split(split, args.data, image_size=args.image_size, cache_dir=args.cache_dir)["train"]
    x_all, y_all = train.tensors()
    steps_per_epoch = math.ceil(len(train) / args.batch_size)
    seed_everything(0)
    model = runtime.prepare_model(build_model(args.model, len(train.classes)))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    times: dict[str, list[float]] = {m: [] for m in args.modes}
    # Interleave the modes batch by batch so background load hits them all alike.
    for rep in range(args.batches + 1):
        for mode in args.modes:
            cfg = TrainConfig(mode=mode, eps=args.eps, attack_steps=args.steps)
            idx = torch.randint(0, len(train), (args.batch_size,), generator=gen)
            xb, yb = runtime.to_device(x_all[idx]), y_all[idx].to(runtime.device)
            model.train()
            t0 = time.perf_counter()
            out = training_step_loss(
                model,
                model,
                xb,
                yb,
                cfg=cfg,
                eps=args.eps,
                class_weights=None,
                batch_index=rep,
                epoch=0,
                runtime=runtime,
            )
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()
            if rep > 0:  # the first round warms up oneDNN kernels
                times[mode].append(time.perf_counter() - t0)
    base = statistics.mean(times["standard"]) if "standard" in times else None
    rows = []
    print(
        f"{args.model} {args.image_size}px batch {args.batch_size}, k={args.steps} attack steps, "
        f"{runtime.describe()}, {steps_per_epoch} steps/epoch, {args.batches} timed batches per mode"
    )
    print(f"{'mode':10s} {'s/batch':>8s} {'s/epoch':>8s} {'x standard':>10s} {'ideal':>6s} {'x ideal':>8s}")
    for mode in args.modes:
        sec = statistics.mean(times[mode])
        ratio = sec / base if base else float("nan")
        ideal = ideal_ratio(mode, args.steps)
        rows.append(
            {
                "mode": mode,
                "s_per_batch": sec,
                "s_per_epoch": sec * steps_per_epoch,
                "ratio": ratio,
                "ideal_ratio": ideal,
            }
        )
        print(
            f"{mode:10s} {sec:8.3f} {sec * steps_per_epoch:8.1f} {ratio:10.2f} {ideal:6.2f} "
            f"{ratio / ideal:8.2f}"
        )
    if args.json:
        print(json.dumps(rows))


def targets(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    runtime = Runtime.resolve(args.device, args.precision)
    eps_list = [] if args.clean_only else [parse_eps(e) for e in (args.eps or ["2/255", "4/255"])]
    for run in args.runs:
        model, info = load_model(run)
        model = runtime.prepare_model(model)
        split = info["split"]["manifest"]
        test = load_split(split, args.data, image_size=info["image_size"], cache_dir=args.cache_dir)["test"]
        x, y = test.tensors()
        seed_everything(0)
        correct = {"clean": 0, **{f"pgd20@{e * 255:.0f}/255": 0 for e in eps_list}}
        for b in torch.arange(len(test)).split(args.batch_size):
            xb, yb = runtime.to_device(x[b]), y[b].to(runtime.device)
            with torch.no_grad(), runtime.autocast():
                correct["clean"] += int((model(xb).argmax(1) == yb).sum())
            for e in eps_list:
                with runtime.autocast():
                    adv = pgd(model, xb, yb, eps=e, steps=20)
                with torch.no_grad(), runtime.autocast():
                    correct[f"pgd20@{e * 255:.0f}/255"] += int((model(adv).argmax(1) == yb).sum())
        acc = {k: v / len(test) for k, v in correct.items()}
        print(
            json.dumps(
                {
                    "run": str(run),
                    "mode": info["mode"],
                    "epoch": info["epoch"],
                    "eps_train": info["eps"],
                    "n_test": len(test),
                    "precision": runtime.precision,
                    **acc,
                }
            )
        )


def fit(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    runtime = Runtime.resolve(args.device, args.precision)
    shifts = [float(v) for v in (args.max_shift or ["0", "0.06"])]
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "split.json"
        save_manifest(make_split(args.data, image_size=args.image_size, cache_dir=args.cache_dir), manifest)
        parts = load_split(manifest, args.data, image_size=args.image_size, cache_dir=args.cache_dir)
        small = min(range(len(parts["train"].classes)), key=lambda k: int((parts["train"].labels == k).sum()))
        for shift in shifts:
            cfg = TrainConfig(
                data=args.data,
                split=str(manifest),
                model=args.model,
                epochs=args.epochs,
                image_size=args.image_size,
                batch_size=args.batch_size,
                lr=args.lr,
                optimizer="adamw",
                max_shift=shift,
                seed=args.seed,
                out=f"{tmp}/shift{shift}",
                device=args.device,
                precision=args.precision,
                cache_dir=args.cache_dir,
            )
            t0 = time.perf_counter()
            train(cfg, progress=False)
            model, _ = load_model(f"{tmp}/shift{shift}/last.safetensors")
            model = runtime.prepare_model(model)
            row = {"max_shift": shift, "epochs": args.epochs, "seconds": round(time.perf_counter() - t0, 1)}
            for name, part in parts.items():
                x, y = part.tensors()
                pred, _ = predict(model, x, runtime, batch_size=128)
                row[f"{name}_acc"] = round(float((pred == y).float().mean()), 4)
                row[f"{name}_{part.classes[small]}"] = (
                    f"{int(((pred == y) & (y == small)).sum())}/{int((y == small).sum())}"
                )
            print(json.dumps(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("cost", help="seconds per epoch per mode and ratios")
    c.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/datasets/iqothnccd"))
    c.add_argument("--model", default="resnet18")
    c.add_argument("--image-size", type=int, default=128)
    c.add_argument("--batch-size", type=int, default=32)
    c.add_argument("--steps", type=int, default=3, help="attack steps k in pgd/mixed/trades")
    c.add_argument("--eps", type=parse_eps, default=2 / 255)
    c.add_argument("--batches", type=int, default=4, help="timed batches per mode")
    c.add_argument("--modes", nargs="+", default=list(MODES))
    c.add_argument("--json", action="store_true")
    t = sub.add_parser("targets", help="test clean and PGD-20 robust accuracy of checkpoints")
    t.add_argument("runs", nargs="+", help="run dirs (best checkpoint) or .safetensors files")
    t.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/datasets/iqothnccd"))
    t.add_argument("--eps", action="append", help="repeatable; default 2/255 and 4/255")
    t.add_argument("--clean-only", action="store_true", help="skip the PGD-20 attacks")
    t.add_argument("--batch-size", type=int, default=64)
    f = sub.add_parser("fit", help="train/val/test accuracy of standard runs per --max-shift")
    f.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/datasets/iqothnccd"))
    f.add_argument("--max-shift", action="append", help="repeatable; default 0 and 0.06")
    f.add_argument("--model", default="resnet18")
    f.add_argument("--epochs", type=int, default=20)
    f.add_argument("--image-size", type=int, default=128)
    f.add_argument("--batch-size", type=int, default=32)
    f.add_argument("--lr", type=float, default=0.002)
    f.add_argument("--seed", type=int, default=0)
    for p in (c, t, f):
        p.add_argument("--device", default="auto")
        p.add_argument("--precision", default="auto")
        p.add_argument("--threads", type=int, default=2)
        p.add_argument("--cache-dir", default=None)
    args = parser.parse_args()
    {"cost": cost, "targets": targets, "fit": fit}[args.command](args)


if __name__ == "__main__":
    try:
        main()
    except FortifyError as err:  # a bad --eps, path or setting: one line, not a traceback
        raise SystemExit(f"error: {err}") from None
