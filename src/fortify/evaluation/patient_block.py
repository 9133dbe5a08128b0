"""results.json's `patient` block, its per-sample fields and its sanity check (docs/results-schema.md).

Patients are the test set's groups (the manifest's "group"; one per image for a manifest without them).
Each patient's decision comes from its slices' probabilities under the stated rule: clean, under each
per-slice attack already run (a: each slice attacked for its own label, then aggregated), and under the
joint attack (b: every slice at once, for the aggregated decision). A patient is robust in the worst case
only if it is right clean and under every one of them. Slice-level numbers are untouched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from fortify.evaluation.metrics import median, worst_case_predictions
from fortify.evaluation.patient_run import JointOutcome, patient_groups
from fortify.evaluation.patients import (
    JOINT_COMPARED,
    LABEL_RULE,
    Patients,
    aggregate,
    joint_no_weaker_check,
    patient_labels,
    patient_metrics,
    rule_text,
    slices_per_patient,
)
from fortify.evaluation.results_blocks import count_pair, harmful_pair

if TYPE_CHECKING:
    from fortify.evaluation.evaluate import LoadedEvaluation
    from fortify.evaluation.unit_run import Assembled

SCOPE = "every slice of the scan, each within eps"


def exact_probabilities(p: torch.Tensor) -> list[list[float]]:
    """Float32 probabilities [N, C] as JSON numbers that read back to the same float32 values (9
    significant digits round-trip any float32). Rounded values would not do: two slices at 0.9993/0.0007
    and 0.0007/0.9993 tie at 4 decimals while the model's own mean does not, and `aggregate` over the
    stored numbers must give the stored patient decisions."""
    return [[float(f"{v:.9g}") for v in row] for row in p.float().tolist()]


def per_sample_fields(ev: LoadedEvaluation, joined: Assembled) -> dict:
    """per_sample.groups and per_sample.probabilities (clean and each headline attack, exact float32)."""
    return {
        "groups": patient_groups(ev)[0],
        "probabilities": {
            "clean": exact_probabilities(joined.clean_prob),
            **{k: exact_probabilities(joined.outcomes[k].prob) for k in ev.specs},
        },
    }


def _in_ball(spec, joint_eps: float, norm: str) -> bool:
    tm = spec.threat_model()
    return tm is not None and tm.norm == norm and tm.eps <= joint_eps + 1e-12


def patient_block(
    ev: LoadedEvaluation, joined: Assembled, rule: str, joint: JointOutcome | None, headline: dict
) -> tuple[dict, dict]:
    """(results["patient"], the joint-vs-aggregate sanity check). `headline`: results["threat_model"],
    stated when no joint attack ran."""
    classes = ev.classes
    groups, groups_from = patient_groups(ev)
    patients = Patients.from_groups(groups)
    y, mixed = patient_labels(ev.y, patients, classes)
    _, clean = aggregate(joined.clean_prob, patients, rule, classes)
    runs = {k: aggregate(joined.outcomes[k].prob, patients, rule, classes)[1] for k in ev.specs}
    if joint is not None:
        runs["joint"] = joint.pred
    clean_ok = clean == y
    robust = {k: clean_ok & (pred == y) for k, pred in runs.items()}
    robust["worst_case"] = clean_ok & torch.stack(list(robust.values()) or [clean_ok]).all(0)
    harmful = harmful_pair(classes)
    worst = worst_case_predictions(y, clean, list(runs.values()), harmful)
    tm = joint.spec.threat_model() if joint is not None else None
    threat = {"norm": tm.norm, "eps": tm.eps} if tm is not None else {k: headline[k] for k in ("norm", "eps")}
    block: dict = {
        "rule": rule,
        "rule_text": rule_text(rule),
        "threat_model": {**threat, "scope": SCOPE},
        "groups_from": groups_from,
        "label_rule": LABEL_RULE,
        "mixed_label_groups": mixed,
        "n": len(patients),
        "slices_per_patient": slices_per_patient(patients),
        "clean": patient_metrics(y, clean, classes),
        "attacks": {k: patient_metrics(y, runs[k], classes) for k in ev.specs},
        "joint": _joint_entry(joint, y, clean_ok, classes) if joint is not None else None,
        # every run the worst case takes (the L2 attacks too, each in its own ball), as the slice-level one
        "worst_case": {"attacks": list(runs), **patient_metrics(y, worst, classes)},
    }
    if harmful is not None:
        block["malignant_to_normal"] = {
            "clean": count_pair(y, clean, harmful),
            **{k: count_pair(y, pred, harmful) for k, pred in runs.items()},
            "worst_case": count_pair(y, worst, harmful),
        }
    block["per_patient"] = _per_patient(patients, y, clean, runs, robust, joint, classes)
    compared = [
        k
        for k, spec in ev.specs.items()
        if tm is not None and spec.name in JOINT_COMPARED and _in_ball(spec, tm.eps, tm.norm)
    ]
    aggregate_robust = clean_ok.clone()
    for k in compared:
        aggregate_robust &= robust[k]
    joint_robust = int(robust["joint"].sum()) if joint is not None else int(aggregate_robust.sum())
    check = joint_no_weaker_check(joint_robust, int(aggregate_robust.sum()), len(patients), compared)
    if joint is None:
        check["detail"] = "not applicable: no joint attack was run"
    return block, check


def _joint_entry(joint: JointOutcome, y: torch.Tensor, clean_ok: torch.Tensor, classes: list[str]) -> dict:
    flipped = clean_ok & (joint.pred != y)
    changed = joint.slices_changed[flipped]
    return {
        "spec": str(joint.spec),
        "params": dict(joint.spec.params),
        "seconds": joint.seconds,
        **joint.passes,
        **joint.book,
        **patient_metrics(y, joint.pred, classes),
        "slices_changed": {
            "median": median(changed.double()),
            "max": int(changed.max()) if changed.numel() else None,
            "n_flipped": int(flipped.sum()),
        },
    }


def _per_patient(
    patients: Patients,
    y: torch.Tensor,
    clean: torch.Tensor,
    runs: dict[str, torch.Tensor],
    robust: dict[str, torch.Tensor],
    joint: JointOutcome | None,
    classes: list[str],
) -> list[dict]:
    rows = []
    for p, pid in enumerate(patients.ids):
        row = {
            "id": pid,
            "label": classes[int(y[p])],
            "n_slices": len(patients.members[p]),
            "clean_pred": classes[int(clean[p])],
            "clean_correct": bool(clean[p] == y[p]),
            "robust": {k: bool(v[p]) for k, v in robust.items()},
        }
        if joint is not None:
            row["joint_pred"] = classes[int(runs["joint"][p])]
            row["slices_changed"] = int(joint.slices_changed[p])
        rows.append(row)
    return rows


def add_patient_results(
    results: dict, ev: LoadedEvaluation, joined: Assembled, rule: str, joint: JointOutcome | None
) -> None:
    """results.json's per_sample groups and probabilities, its `patient` block and the joint attack's
    sanity check (results["sanity"])."""
    results["per_sample"].update(per_sample_fields(ev, joined))
    block, check = patient_block(ev, joined, rule, joint, results["threat_model"])
    results["patient"] = block
    results["sanity"].append(check)
