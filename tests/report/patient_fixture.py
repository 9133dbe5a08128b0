"""A hand-built `patient` block of results.json, exactly as issue 31's agreed schema (docs/results-schema.md)
describes it, so the consumers (report, CV pooling, paired comparison) are tested without the producer.
Outcomes are chosen, not random: `wrong[key]` patients (in a fixed order, so the sets nest) are
misclassified under each key, every metric is computed from those decisions by evaluation's own METRICS
builder, and the per_patient records agree with the metrics."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import torch

from fortify.evaluation.metrics import metrics_from_confusion

CLASSES = ["benign", "malignant", "normal"]
SLICE_ATTACKS = ["fgsm", "pgd", "cw", "strong"]
KEYS = ["clean", *SLICE_ATTACKS, "joint"]
# 12 patients (3 benign, 4 malignant, 5 normal) with 30 slices in all (the conftest's 30 test images)
LABELS = ["benign"] * 3 + ["malignant"] * 4 + ["normal"] * 5
N_SLICES = [1, 2, 3, 4, 1, 2, 3, 4, 2, 3, 2, 3]
# The order in which patients fall: a malignant first (called normal: the harmful mistake), then others.
FALL_ORDER = [3, 0, 7, 8, 4, 1, 9, 5, 10, 2, 11, 6]
WRONG_AS = {"benign": "malignant", "malignant": "normal", "normal": "benign"}
# Misclassified patients per key; nested (each a prefix of FALL_ORDER), so worst case = the largest set.
WRONG = {
    "normal": {"clean": 1, "fgsm": 6, "pgd": 9, "cw": 7, "strong": 10, "joint": 11},
    "adversarial": {"clean": 2, "fgsm": 3, "pgd": 4, "cw": 3, "strong": 5, "joint": 6},
}
RULE_TEXT = "a patient's prediction is the argmax of the mean of its slices' softmax probabilities"
JOINT_SPEC = "joint-pgd:eps=2/255,steps=20,alpha=0.000980392,rule=mean,chunk=16"


def _metrics(labels: Sequence[str], preds: Sequence[str]) -> dict:
    cm = torch.zeros(len(CLASSES), len(CLASSES), dtype=torch.int64)
    for t, p in zip(labels, preds, strict=True):
        cm[CLASSES.index(t), CLASSES.index(p)] += 1
    return metrics_from_confusion(cm, CLASSES)


def _predictions(wrong: dict[str, int], ids: Sequence[int]) -> dict[str, list[str]]:
    """key -> each patient's decision; a patient wrong under a key is sent to WRONG_AS of its label."""
    out = {}
    for key, w in wrong.items():
        fallen = set(FALL_ORDER[:w])
        out[key] = [WRONG_AS[LABELS[i]] if i in fallen else LABELS[i] for i in ids]
    return out


def patient_block(
    stage: str = "normal",
    *,
    prefix: str = "",
    wrong: dict[str, int] | None = None,
    rule: str = "mean",
    groups_from: str = "manifest",
    mixed_label_groups: int = 0,
) -> dict:
    """The `patient` block of one model's results.json; ids are f"{prefix}{label}/scan-{i:03d}"."""
    wrong = dict(wrong or WRONG[stage])
    wrong["worst_case"] = max(wrong.values())  # nested sets: the worst case is the largest
    ids = list(range(len(LABELS)))
    preds = _predictions(wrong, ids)
    metrics = {key: _metrics(LABELS, p) for key, p in preds.items()}
    clean_wrong = set(FALL_ORDER[: wrong["clean"]])
    flipped = [i for i in FALL_ORDER[: wrong["joint"]] if i not in clean_wrong]
    changed = {i: max(1, N_SLICES[i] - 1) for i in flipped}
    per_patient = [
        {
            "id": f"{prefix}{LABELS[i]}/scan-{i:03d}",
            "label": LABELS[i],
            "n_slices": N_SLICES[i],
            "clean_pred": preds["clean"][i],
            "clean_correct": preds["clean"][i] == LABELS[i],
            "robust": {k: preds[k][i] == LABELS[i] for k in [*SLICE_ATTACKS, "joint", "worst_case"]},
            "joint_pred": preds["joint"][i],
            "slices_changed": changed.get(i, 0),
        }
        for i in ids
    ]
    m2n = {
        k: sum(t == "malignant" and p == "normal" for t, p in zip(LABELS, preds[k], strict=True))
        for k in [*KEYS, "worst_case"]
    }
    return {
        "rule": rule,
        "rule_text": RULE_TEXT if rule == "mean" else f"rule {rule}",
        "threat_model": {"norm": "linf", "eps": 2 / 255, "scope": "every slice of the scan, each within eps"},
        "groups_from": groups_from,
        "label_rule": "majority (ties: malignant > benign > normal)",
        "mixed_label_groups": mixed_label_groups,
        "n": len(ids),
        "slices_per_patient": {
            "min": min(N_SLICES),
            "median": float(statistics.median(N_SLICES)),
            "max": max(N_SLICES),
            "mean": round(sum(N_SLICES) / len(N_SLICES), 2),
        },
        "clean": metrics["clean"],
        "attacks": {k: metrics[k] for k in SLICE_ATTACKS},
        "joint": {
            "spec": JOINT_SPEC,
            "params": {"eps": 2 / 255, "steps": 20, "rule": rule, "chunk": 16},
            "seconds": 1.2,
            "gradient_evaluations": 600,
            "forward_passes": 40,
            "harmful_targeted": 3,
            "harmful_found": 1,
            **metrics["joint"],
            "slices_changed": {
                "median": float(statistics.median(changed.values())) if changed else None,
                "max": max(changed.values()) if changed else None,
                "n_flipped": len(changed),
            },
        },
        "worst_case": {"attacks": [*SLICE_ATTACKS, "joint"], **metrics["worst_case"]},
        "malignant_to_normal": m2n,
        "per_patient": per_patient,
    }


def joint_check(passed: bool = True) -> dict:
    """The sanity check evaluation adds for the joint attack (undermines the patient "joint" number)."""
    return {
        "check": "joint attack no weaker than the per-slice aggregate",
        "passed": passed,
        "detail": "joint leaves 6 patients robust, the per-slice aggregate 7"
        if passed
        else "joint leaves 9 patients robust, the per-slice aggregate 7",
        "undermines": ["joint"],
    }


def add_patients(results: dict, stage: str, *, prefix: str = "", joint_passed: bool = True, **kw) -> dict:
    """results.json with the patient block, per_sample.groups (one per test image, in path order) and
    the joint attack's sanity check, as evaluation writes them."""
    block = patient_block(stage, prefix=prefix, **kw)
    results["patient"] = block
    groups = [e["id"] for e in block["per_patient"] for _ in range(e["n_slices"])]
    ps = results.get("per_sample")
    if isinstance(ps, dict) and len(ps.get("paths") or []) == len(groups):
        ps["groups"] = groups
    results.setdefault("sanity", []).append(joint_check(joint_passed))
    return results


def accuracy(stage: str, key: str) -> tuple[int, int]:
    """(correct, n) over patients for a key of WRONG (worst_case = the largest set)."""
    w = WRONG[stage]
    return len(LABELS) - (max(w.values()) if key == "worst_case" else w[key]), len(LABELS)


def class_recall(stage: str, key: str, cls: str) -> tuple[int, int]:
    """(correct, n) over the patients of class `cls` under `key`."""
    w = WRONG[stage]
    fallen = set(FALL_ORDER[: max(w.values()) if key == "worst_case" else w[key]])
    members = [i for i, label in enumerate(LABELS) if label == cls]
    return sum(i not in fallen for i in members), len(members)
