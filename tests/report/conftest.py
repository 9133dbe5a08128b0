"""A hand-written run directory that follows docs/results-schema.md, so the report is tested without
training anything. Numbers are arbitrary but distinct, so a test can tell which one landed where."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from fortify.evaluation.compare import compare_results
from fortify.evaluation.stats import interval_or_none
from fortify.fileio import append_jsonl, write_json, write_yaml

CLASSES = ["benign", "malignant", "normal"]
ATTACKS = ["fgsm", "pgd", "cw", "strong"]
EXTRA_ATTACK_FIELDS = ("gradient_evaluations", "verdict_mismatches", "reattacked_fp32")
BUDGET_NOTE = "smoke profile: PGD 5 steps, strong 3 steps"
# audit.json's dataset.identity as fortify.data.identity writes it
IQOTHNCCD_IDENTITY = {"name": "IQ-OTH/NCCD", "reason": "IQ-OTH/NCCD's class folders and its 1,097 files"}
SYNTHETIC_IDENTITY = {"name": None, "reason": "synthetic phantom data"}


def metrics(acc: float, n: int = 30) -> dict:
    correct = round(acc * n)
    per = n // 3
    diag = [correct // 3 + (1 if i < correct % 3 else 0) for i in range(3)]
    confusion = [[diag[i] if j == i else 0 for j in range(3)] for i in range(3)]
    for i in range(3):  # put the misses in the next class (malignant misses land on "normal")
        confusion[i][(i + 1) % 3] = per - diag[i]
    return {
        "accuracy": acc,
        "accuracy_ci": interval_or_none(correct, n),
        "balanced_accuracy": acc,
        "n": n,
        "correct": correct,
        "per_class": {
            c: {
                "sensitivity": diag[i] / per,
                "specificity": 0.9,
                "precision": 0.8,
                "support": per,
                "sensitivity_ci": interval_or_none(diag[i], per),
                "specificity_ci": interval_or_none(18, 20),
            }
            for i, c in enumerate(CLASSES)
        },
        "confusion": confusion,
    }


def per_sample(accs: dict[str, float], n: int = 30) -> dict:
    """0/1 per test image consistent with the accuracies: the first round(acc * n) images are right."""
    keys = ["clean", *ATTACKS, "worst_case"]
    return {
        "paths": [f"test/{i}.jpg" for i in range(n)],
        "correct": {k: [int(i < round(accs[k] * n)) for i in range(n)] for k in keys},
    }


def sentinel(stage: str, clean_acc: float, warn: bool) -> dict:
    acc = 0.9333 if warn else 0.5
    return {
        "method": "1-nearest-neighbour on 32x32 raw-pixel thumbnails, train -> test",
        "thumbnail": 32,
        "accuracy": acc,
        "accuracy_ci": interval_or_none(round(acc * 30), 30),
        "n_test": 30,
        "neighbour_share": 0.6 if warn else 0.1,
        "model_clean_accuracy": clean_acc,
        "warning": f"LEAKAGE SUSPECTED: 1-NN scores 93.3% ({stage})" if warn else None,
    }


def legacy(results: dict) -> dict:
    """The same results.json as written before intervals, sentinel, budget and per-sample records."""
    for key in ("interval", "leakage_sentinel", "budget", "per_sample"):
        results.pop(key, None)
    blocks = [results["clean"], results["combined"], results["worst_case"], *results["attacks"].values()]
    for m in blocks:
        m.pop("accuracy_ci", None)
        for a in EXTRA_ATTACK_FIELDS:
            m.pop(a, None)
        for pc in m["per_class"].values():
            pc.pop("sensitivity_ci", None)
            pc.pop("specificity_ci", None)
    return results


def results(
    stage: str,
    accs: dict[str, float],
    *,
    synthetic: bool,
    failing: bool,
    sentinel_warning: bool = False,
    full_strength: bool = True,
) -> dict:
    attacks = {}
    for name in ATTACKS:
        spec = {
            "fgsm": "fgsm:eps=2/255",
            "pgd": "pgd:eps=2/255,steps=20",
            "cw": "cw:steps=50,max_l2=0.5",
            "strong": "strong:eps=2/255",
        }[name]
        tm = {"norm": "l2", "eps": 0.5} if name == "cw" else {"norm": "linf", "eps": 2 / 255}
        params = {"eps": tm["eps"]} if name != "cw" else {"steps": 50, "max_l2": 0.5}
        attacks[name] = {
            "spec": spec,
            "params": params,
            "threat_model": tm,
            **metrics(accs[name]),
            "success_rate": 0.3,
            "perturbation": {"l2_median": 0.4, "l2_mean": 0.45, "linf_median": 2 / 255, "linf_mean": 2 / 255},
            "seconds": 1.5,
        }
    attacks["cw"]["cw_median_l2"] = 0.61
    attacks["pgd"].update(gradient_evaluations=600, verdict_mismatches=2, reattacked_fp32=3)
    attacks["strong"]["gradient_evaluations"] = 4500
    sanity = [
        {
            "check": "PGD no weaker than FGSM",
            "passed": True,
            "detail": "pgd 0.5 <= fgsm 0.6",
            "undermines": ["pgd"],
        }
    ]
    if failing:
        sanity.append(
            {
                "check": "accuracy non-increasing in eps (pgd)",
                "passed": False,
                "detail": "acc rose from 0.40 to 0.55 at 8/255",
                "undermines": ["pgd", "strong"],
            }
        )
    return {
        "format": "fortify-results/1",
        "seed": 0,
        "checkpoint": {
            "path": f"{stage}/best.safetensors",
            "sha256": "ab" * 32,
            "model": "smallcnn",
            "mode": "standard" if stage == "normal" else "mixed",
            "train_eps": 2 / 255,
            "epoch": 1,
        },
        "data": {
            "root": None if synthetic else "/data/iqothnccd",
            "manifest": "split.json",
            "split": "test",
            "n": 30,
            "classes": CLASSES,
            "image_size": 16,
            "synthetic": synthetic,
        },
        "runtime": {"device": "cpu", "precision": "fp32", "channels_last": False},
        "threat_model": {"norm": "linf", "eps": 2 / 255},
        "interval": {"method": "wilson", "level": 0.95},
        "leakage_sentinel": sentinel(stage, accs["clean"], sentinel_warning),
        "budget": {"full_strength": full_strength, "note": "full strength" if full_strength else BUDGET_NOTE},
        "per_sample": per_sample(accs),
        "clean": metrics(accs["clean"]),
        "attacks": attacks,
        "combined": {"attacks": ["fgsm", "pgd", "cw"], **metrics(accs["combined"])},
        "worst_case": {"attacks": ATTACKS, **metrics(accs["worst_case"])},
        "malignant_to_normal": {"clean": 0, "fgsm": 1, "pgd": 3, "cw": 2, "strong": 4, "worst_case": 5},
        "curves": {
            "pgd": {
                "spec": "pgd:steps=10",
                "norm": "linf",
                "points": [[0.0, accs["clean"]], [2 / 255, accs["pgd"]], [8 / 255, 0.1]],
                "cumulative": True,
            }
        },
        "sanity": sanity,
        "examples": {"file": "examples.safetensors", "indices": list(range(6)), "attacks": ATTACKS},
        "config": {"batch_size": 64},
    }


def write_examples(path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(6, 1, 16, 16, generator=g)
    t = {
        "clean": clean,
        "labels": torch.tensor([0, 0, 1, 1, 2, 2]),
        "clean_pred": torch.tensor([0, 0, 1, 1, 2, 2]),
        "clean_conf": torch.full((6,), 0.9),
    }
    for a in ATTACKS:
        t[f"adv.{a}"] = (clean + 2 / 255 * torch.sign(torch.randn(6, 1, 16, 16, generator=g))).clamp(0, 1)
        t[f"pred.{a}"] = torch.tensor([2, 0, 2, 1, 2, 0])
        t[f"conf.{a}"] = torch.full((6,), 0.7)
    save_file(t, str(path))


STAGE_ACCS = {
    "normal": {
        "clean": 0.9667,
        "fgsm": 0.3333,
        "pgd": 0.1,
        "cw": 0.2,
        "strong": 0.0667,
        "combined": 0.2111,
        "worst_case": 0.0333,
    },
    "adversarial": {
        "clean": 0.9333,
        "fgsm": 0.8667,
        "pgd": 0.8333,
        "cw": 0.8,
        "strong": 0.7667,
        "combined": 0.8444,
        "worst_case": 0.7333,
    },
}


def make_run(
    root: Path,
    *,
    synthetic: bool = False,
    failing: bool = False,
    stages=("normal", "adversarial"),
    transfer: bool = True,
    transfer_fail: bool = False,
    old_format: bool = False,
    sentinel_warning: bool = False,
    full_strength: bool = True,
    comparison: bool = True,
    identity: dict | None = None,
) -> Path:
    """A run directory; old_format writes results.json as before intervals/sentinel/budget/per-sample."""
    root.mkdir(parents=True, exist_ok=True)
    write_yaml(
        root / "config.yaml",
        {
            "format": "fortify-run/1",
            "profile": "smoke",
            "defense": "mixed",
            "data": "phantom" if synthetic else "/data/iqothnccd",
            "seed": 0,
        },
    )
    write_json(
        root / "audit.json",
        {
            "format": "fortify-audit/1",
            "dataset": {
                "root": "/data/iqothnccd",
                "synthetic": synthetic,
                "classes": CLASSES,
                "n_files": 91,
                "n_images": 90,
                "identity": identity or (SYNTHETIC_IDENTITY if synthetic else IQOTHNCCD_IDENTITY),
            },
            "counts": {"benign": 30, "malignant": 30, "normal": 30},
            "sizes": {
                "benign": {"512x512": 30},
                "malignant": {"512x512": 20, "623x512": 10},
                "normal": {"512x512": 30},
            },
            "unreadable": [{"path": "x.jpg", "error": "truncated"}],
            "exact_duplicates": {"n_groups": 2, "n_pairs": 2},
            "near_duplicates": {"n_groups": 3, "images_in_groups": 9},
            "warnings": ["shortcut: image size 623x512 occurs only in class malignant (10 images)"],
        },
    )
    split = {
        "format": "fortify-split/1",
        "dataset": {"root": "/data", "classes": CLASSES, "n_files": 90},
        "seed": 0,
        "fractions": [0.7, 0.15, 0.15],
        "dropped_duplicates": ["a.jpg"],
        "near_duplicate_groups": 2,
        "splits": {
            s: [{"path": f"{s}{i}", "label": i % 3, "sha256": "x"} for i in range(n)]
            for s, n in (("train", 60), ("val", 15), ("test", 15))
        },
    }
    write_json(root / "split.json", split)
    written: dict[str, dict] = {}
    for stage in stages:
        d = root / stage
        write_yaml(
            d / "config.yaml",
            {
                "model": "smallcnn",
                "mode": "standard" if stage == "normal" else "mixed",
                "eps": 2 / 255,
                "epochs": 2,
                "image_size": 16,
                "seed": 0,
            },
        )
        for epoch in (1, 2):
            append_jsonl(
                d / "metrics.jsonl",
                {"epoch": epoch, "train_loss": 1.0 / epoch, "val_acc": 0.5 * epoch, "seconds": 3.0},
            )
        r = results(
            stage,
            STAGE_ACCS[stage],
            synthetic=synthetic,
            failing=failing and stage == "adversarial",
            sentinel_warning=sentinel_warning,
            full_strength=full_strength,
        )
        written[stage] = legacy(r) if old_format else r
        write_json(d / "eval" / "results.json", written[stage])
        write_examples(d / "eval" / "examples.safetensors")
    if comparison and not old_format and len(written) == 2:
        write_json(root / "comparison.json", compare_results(written["normal"], written["adversarial"]))
    if transfer:
        pairs = []
        for src, dst, t_acc, wb_acc in (
            ("normal", "adversarial", 0.9, 0.8333),
            ("adversarial", "normal", 0.4, 0.1),
        ):
            fail = transfer_fail and dst == "adversarial"
            check = {
                "check": "white-box no weaker than transfer",
                "passed": not fail,
                "detail": "white-box 95% vs transferred 60%" if fail else "ok",
                "undermines": ["pgd"],
            }
            pairs.append(
                {
                    "source": src,
                    "target": dst,
                    "attack": "pgd:eps=2/255",
                    "transfer_accuracy": t_acc,
                    "white_box_accuracy": wb_acc,
                    "n": 30,
                    "sanity": check,
                }
            )
        write_json(root / "transfer.json", {"pairs": pairs})
    return root


@pytest.fixture
def run_factory(tmp_path):
    def factory(**kw) -> Path:
        return make_run(tmp_path / "run", **kw)

    return factory


@pytest.fixture(scope="module")
def built_report(tmp_path_factory):
    """One report from the default fixture run (all stages, all checks PASS), shared by read-only tests."""
    from fortify.report import build_report

    return build_report(make_run(tmp_path_factory.mktemp("built") / "run"))
