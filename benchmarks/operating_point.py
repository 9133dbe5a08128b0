"""Does a logit offset chosen on validation (`fortify operating-point`) hold on images it was not chosen on?

For each fold's checkpoint the offsets are chosen on one half of the validation images and scored on the
other half (halves are whole scan groups, drawn --repeats times, both directions), against the same
held-out half without offsets. The test images are never read. Variants of the choice:
    all             every class but the most frequent may move (the command's default)
    benign          only the benign logit moves
    all-keep-malig  as `all`, keeping malignant recall at least what it was without offsets (on the
                    choosing half): the costly error may not grow
Clean accuracy only: an offset changes what an attack aims at, so robust accuracy with the offsets is
measured by `fortify evaluate` on the test folds, once a variant is chosen here.

    .venv/bin/python benchmarks/operating_point.py --data ../shared/datasets/iqothnccd \\
        --checkpoint '/tmp/recipes/smallcnn-pgd-at-awp/fold-{k}/adversarial/last.safetensors' \\
        --split '/tmp/recipes/folds/fold-{k}.json' --folds 0,1,2,3,4 --out /tmp/operating_point.json
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recipes import DEFAULT_DATA  # noqa: E402

from fortify.data import load_split  # noqa: E402
from fortify.data.groups import leakage_groups  # noqa: E402
from fortify.errors import FortifyError  # noqa: E402
from fortify.evaluation.metrics import classification_metrics  # noqa: E402
from fortify.evaluation.operating_point import choose_class_bias, resolve_floors, validation_logits  # noqa: E402
from fortify.fileio import write_json  # noqa: E402
from fortify.runtime import cpu_kind  # noqa: E402
from fortify.training import load_model  # noqa: E402

VARIANTS = ("none", "all", "benign", "all-keep-malig")


def choose(variant: str, logits: torch.Tensor, y: torch.Tensor, classes: list[str]) -> torch.Tensor:
    """The offsets `variant` picks on these images (zeros for "none")."""
    if variant == "none":
        return torch.zeros(len(classes))
    move = ["benign"] if variant == "benign" else None
    floors = None
    if variant == "all-keep-malig":  # malignant recall at least what it is without offsets
        floors = resolve_floors(
            {"malignant": "keep"}, classes, classification_metrics(y, logits.argmax(1), classes)
        )
    return torch.tensor(choose_class_bias(logits, y, classes, move=move, min_recall=floors).bias)


def scores(logits: torch.Tensor, y: torch.Tensor, bias: torch.Tensor, classes: list[str]) -> dict:
    pred = (logits + bias).argmax(1)
    m = classification_metrics(y, pred, classes)
    out = {"accuracy": m["accuracy"], "balanced": m["balanced_accuracy"]}
    for name, c in m["per_class"].items():
        out[f"{name}_hit"], out[f"{name}_n"] = round((c["sensitivity"] or 0) * c["support"]), c["support"]
    out["malignant_to_normal"] = m["confusion"][classes.index("malignant")][classes.index("normal")]
    return out


def ranking_auc(logits: torch.Tensor, y: torch.Tensor, classes: list[str]) -> float | None:
    """P(a benign image scores above a normal one) on benign-minus-normal logit (ties count half): how well
    the model ranks the two, whatever its threshold. None without both classes."""
    score = logits[:, classes.index("benign")] - logits[:, classes.index("normal")]
    pos, neg = score[y == classes.index("benign")], score[y == classes.index("normal")]
    if len(pos) == 0 or len(neg) == 0:
        return None
    diff = pos[:, None] - neg[None, :]
    return float((diff > 0).float().mean() + 0.5 * (diff == 0).float().mean())


def cross_fit(logits, y, groups, classes, repeats: int, seed: int) -> dict[str, dict]:
    """Sums (counts) and means (rates) of each variant's held-out-half scores over the halvings."""
    rng = random.Random(seed)
    order = list(range(len(groups)))
    acc: dict[str, dict[str, list[float]]] = {v: {} for v in VARIANTS}
    for _ in range(repeats):
        rng.shuffle(order)
        a = [i for g in order[: len(order) // 2] for i in groups[g]]
        b = [i for g in order[len(order) // 2 :] for i in groups[g]]
        for pick, held in ((a, b), (b, a)):
            for v in VARIANTS:
                bias = choose(v, logits[pick], y[pick], classes)
                for key, value in scores(logits[held], y[held], bias, classes).items():
                    if value is not None:
                        acc[v].setdefault(key, []).append(value)
    return {
        v: {
            k: (sum(xs) if k.endswith(("_hit", "_n", "_normal")) else statistics.mean(xs))
            for k, xs in m.items()
        }
        for v, m in acc.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--checkpoint", required=True, help="path with {k} for the fold")
    ap.add_argument("--split", required=True, help="manifest path with {k} for the fold")
    ap.add_argument("--folds", default="0,1,2,3,4")
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)  # small forward passes: leave the other core to whatever else runs
    t0 = time.perf_counter()
    per_fold = []
    for k in [int(f) for f in args.folds.split(",")]:
        ckpt, manifest = Path(args.checkpoint.format(k=k)), Path(args.split.format(k=k))
        model, info = load_model(ckpt)
        val = load_split(manifest, args.data, image_size=int(info["image_size"]))["val"]
        groups = leakage_groups(val.fingerprints, val.labels.tolist(), val.paths, val.classes).groups
        x, y = val.tensors()
        logits = validation_logits(model, x)
        res = cross_fit(logits, y, groups, list(val.classes), args.repeats, args.seed)
        full = choose_class_bias(logits, y, list(val.classes)).bias  # what the command would write
        res["benign_normal_auc"] = ranking_auc(logits, y, list(val.classes))
        per_fold.append(
            {"fold": k, "checkpoint": str(ckpt), "groups": len(groups), "chosen_on_all_val": full, **res}
        )
        line = "  ".join(
            f"{v} acc {100 * res[v]['accuracy']:.1f} bal {100 * res[v]['balanced']:.1f}" for v in VARIANTS
        )
        print(
            f"fold {k} ({len(groups)} scan groups, benign-vs-normal AUC "
            f"{res['benign_normal_auc']:.3f}): {line}",
            flush=True,
        )
    print(f"\nheld-out halves, mean ± sd over {len(per_fold)} folds ({args.repeats} halvings x 2 per fold)")
    print(
        "variant          accuracy      balanced      benign recall (pooled)   malignant recall   "
        "malig->normal"
    )
    summary = {}
    for v in VARIANTS:
        accs = [f[v]["accuracy"] for f in per_fold]
        bals = [f[v]["balanced"] for f in per_fold]
        sd = statistics.stdev if len(per_fold) > 1 else (lambda xs: 0.0)
        hit = {c: sum(f[v][f"{c}_hit"] for f in per_fold) for c in ("benign", "malignant")}
        n = {c: sum(f[v][f"{c}_n"] for f in per_fold) for c in ("benign", "malignant")}
        m2n = sum(f[v]["malignant_to_normal"] for f in per_fold)
        summary[v] = {
            "accuracy": [statistics.mean(accs), sd(accs)],
            "balanced": [statistics.mean(bals), sd(bals)],
            "benign_recall": hit["benign"] / max(n["benign"], 1),
            "malignant_recall": hit["malignant"] / max(n["malignant"], 1),
            "malignant_to_normal": m2n,
            "per_fold_accuracy": accs,
            "per_fold_balanced": bals,
        }
        print(
            f"{v:16s} {100 * statistics.mean(accs):5.1f} ± {100 * sd(accs):4.1f}  "
            f"{100 * statistics.mean(bals):5.1f} ± {100 * sd(bals):4.1f}  "
            f"{100 * summary[v]['benign_recall']:5.1f}%                   "
            f"{100 * summary[v]['malignant_recall']:5.1f}%             {m2n}"
        )
    seconds = time.perf_counter() - t0
    aucs = [f["benign_normal_auc"] for f in per_fold if f["benign_normal_auc"] is not None]
    per = ", ".join(f"{a:.3f}" for a in aucs)
    print(f"benign-vs-normal ranking AUC on validation: {statistics.mean(aucs):.3f} (per fold {per})")
    print(f"{seconds:.0f} s, CPU {cpu_kind()}")
    if args.out:
        write_json(
            args.out,
            {
                "cpu": cpu_kind(),
                "seconds": seconds,
                "args": vars(args) | {"out": str(args.out)},
                "per_fold": per_fold,
                "summary": summary,
            },
        )


if __name__ == "__main__":
    try:
        main()
    except FortifyError as e:
        sys.exit(f"operating_point: error: {e}")
