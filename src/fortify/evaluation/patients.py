"""Patients from slices: the groups, their labels, the aggregation rules, patient metrics.

A clinician decides per patient (a scan), not per slice. The split's groups (the manifest's "group": a
reconstructed scan, or a DICOM PatientID) are the patients; a patient's prediction comes from its slices'
softmax probabilities by a stated rule (RULES), and its label is the majority of its slices' labels
(ties: the clinically worse class). Pure functions over tensors, so hand-built probabilities can check
every rule; the decision itself is `fortify.attacks.patient_decision`, the one the joint attack stops on.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fortify.attacks import patient_decision
from fortify.errors import ConfigError
from fortify.evaluation.metrics import classification_metrics
from fortify.evaluation.sanity import no_weaker_than, tolerance_for

RULES = ("mean", "vote", "max:<class>")
# Clinically worse first: a tie is resolved towards the mistake that costs more to miss.
SEVERITY = ("malignant", "benign", "normal")
LABEL_RULE = "majority (ties: malignant > benign > normal)"
JOINT_CHECK = "joint attack no weaker than the per-slice aggregate"
JOINT_COMPARED = ("pgd", "fgsm")  # the per-slice attacks the joint attack generalises (same ball, steps)


def check_rule(rule: str, classes: Sequence[str]) -> str:
    """`rule` if it is "mean", "vote" or "max:<one of classes>"; ConfigError otherwise."""
    if rule in ("mean", "vote"):
        return rule
    name = rule.partition(":")[2] if rule.startswith("max:") else None
    if name is None or name not in classes:
        valid = ", ".join(["mean", "vote", *(f"max:{c}" for c in classes)])
        raise ConfigError(f"unknown patient rule {rule!r}; valid: {valid}")
    return rule


def rule_text(rule: str) -> str:
    """The rule in words, for results.json and the report."""
    if rule == "mean":
        return "a patient's prediction is the argmax of the mean of its slices' softmax probabilities"
    if rule == "vote":
        return (
            "a patient's prediction is the class most of its slices predict (ties: the higher mean "
            "softmax probability, then the clinically worse class)"
        )
    name = rule.partition(":")[2]
    return (
        f"a patient is {name} if any of its slices is predicted {name}; otherwise its prediction is the "
        f"argmax of the mean of its slices' softmax probabilities over the other classes"
    )


def indexed_rule(rule: str, classes: Sequence[str]) -> str:
    """The rule with class indices ("max:malignant" -> "max:1"), as `patient_decision` and the joint
    attack take it."""
    check_rule(rule, classes)
    return f"max:{list(classes).index(rule.partition(':')[2])}" if rule.startswith("max:") else rule


def severity_order(classes: Sequence[str]) -> list[int]:
    """Class indices from clinically worst to least: malignant, benign, normal, then the others in order."""
    known = [classes.index(c) for c in SEVERITY if c in classes]
    return known + [k for k in range(len(classes)) if k not in known]


@dataclass
class Patients:
    """The patients of a test set: sorted ids and each one's slice indices (in test-set order)."""

    ids: list[str]
    members: list[list[int]]

    @classmethod
    def from_groups(cls, groups: Sequence[str]) -> Patients:
        by_id: dict[str, list[int]] = defaultdict(list)
        for i, g in enumerate(groups):
            by_id[str(g)].append(i)
        ids = sorted(by_id)
        return cls(ids, [by_id[p] for p in ids])

    def __len__(self) -> int:
        return len(self.ids)

    def sizes(self) -> list[int]:
        return [len(m) for m in self.members]


def aggregate(
    probs: torch.Tensor, groups: Sequence[str] | Patients, rule: str, classes: Sequence[str] | None = None
) -> tuple[list[str], torch.Tensor]:
    """(sorted patient ids, each patient's predicted class) from slice probabilities [N, C] under `rule`
    ("mean", "vote", "max:<class name>" with `classes`, or "max:<index>" without)."""
    patients = groups if isinstance(groups, Patients) else Patients.from_groups(groups)
    if len(probs) != sum(patients.sizes()):
        raise ValueError(f"{len(probs)} slices but the groups name {sum(patients.sizes())}")
    names = list(classes) if classes is not None else [str(k) for k in range(probs.shape[1])]
    indexed = indexed_rule(rule, names)
    order = severity_order(names)
    decisions = [patient_decision(probs[m], indexed, order) for m in patients.members]
    return patients.ids, torch.tensor(decisions, dtype=torch.long)


def patient_labels(
    labels: torch.Tensor, patients: Patients, classes: Sequence[str]
) -> tuple[torch.Tensor, int]:
    """Each patient's label by majority of its slices (ties: the clinically worse class), and how many
    patients mix labels."""
    order = severity_order(classes)
    out, mixed = [], 0
    for m in patients.members:
        counts = torch.bincount(labels[m], minlength=len(classes))
        mixed += int((counts > 0).sum()) > 1
        tied = [k for k in range(len(classes)) if counts[k] == counts.max()]
        out.append(min(tied, key=order.index))
    return torch.tensor(out, dtype=torch.long), mixed


def patient_metrics(labels: torch.Tensor, preds: torch.Tensor, classes: Sequence[str]) -> dict:
    """The METRICS block (accuracy, Wilson intervals, per class, confusion) over patients."""
    return classification_metrics(labels, preds, classes)


def slices_per_patient(patients: Patients) -> dict:
    sizes = torch.tensor(patients.sizes(), dtype=torch.double)
    if sizes.numel() == 0:
        return {"min": 0, "median": None, "max": 0, "mean": None}
    srt = sizes.sort().values
    mid = len(srt) // 2
    median = float(srt[mid]) if len(srt) % 2 else float((srt[mid - 1] + srt[mid]) / 2)
    return {"min": int(srt[0]), "median": median, "max": int(srt[-1]), "mean": round(float(sizes.mean()), 2)}


def joint_no_weaker_check(joint_robust: int, aggregate_robust: int, n: int, compared: Sequence[str]) -> dict:
    """FAIL when the joint attack leaves more patients robust than the aggregate of the per-slice attacks
    it generalises (`compared`: PGD and FGSM in its ball): it attacks every slice at once for the
    patient's decision with the same steps, so it must flip at least what attacking them one by one does.
    Tolerance: one patient on fewer than 100 (random starts), as the slice-level checks allow one image.
    The stronger per-slice attacks (strong, CW) are not compared: they are other algorithms at other
    budgets, and the patient worst case includes them anyway."""
    check = no_weaker_than(
        "joint",
        joint_robust / n if n else 0.0,
        "per-slice aggregate (" + (", ".join(compared) or "none") + ")",
        aggregate_robust / n if n else 0.0,
        ["joint"],
        tolerance=tolerance_for(n),
        name=JOINT_CHECK,
    )
    check["detail"] += (
        f"; patients robust: joint {joint_robust}, per-slice aggregate {aggregate_robust} of {n}"
    )
    return check
