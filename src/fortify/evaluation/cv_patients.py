"""Patient-level numbers pooled over cross-validation folds (cv/summary.json's `patient`, issue 31).

Each fold's results.json carries `patient.per_patient`: one record per test patient with its label and
its robust flags (clean, each per-slice attack's aggregate, the joint attack, the worst case). The folds
keep patients whole, so every patient is tested in exactly one fold and the records of all folds together
are one accuracy over all patients, with a Wilson interval. A patient id in two folds means the folds are
not a partition of the patients (a leak, or two runs mixed up): that is an error, not a gap.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from fortify.evaluation.metrics import INTERVAL
from fortify.evaluation.stats import interval_or_none

# The keys every per_patient record's "robust" holds besides the per-slice attacks, in report order.
PATIENT_ONLY_KEYS = ("joint", "worst_case")
MIXED = "(differs between folds)"  # what a pooled record says where its folds measured different things


def same_in_every_fold(values: set) -> Any:
    """The one value all folds share, else MIXED."""
    return next(iter(values)) if len(values) == 1 else MIXED


def patient_flags(entry: dict[str, Any]) -> dict[str, bool]:
    """One per_patient record's outcomes: "clean" (clean_correct) and each key of its "robust" flags."""
    return {
        "clean": bool(entry.get("clean_correct")),
        **{k: bool(v) for k, v in (entry.get("robust") or {}).items()},
    }


def _rate(correct: int, n: int, name: str) -> dict[str, Any]:
    return {
        name: correct / n if n else None,
        f"{name}_ci": interval_or_none(correct, n, INTERVAL["level"]),
        "correct": correct,
        "n": n,
    }


def _metric(entries: list[dict[str, Any]], key: str, classes: Sequence[str]) -> dict[str, Any]:
    """accuracy over patients with its Wilson interval, and each class's sensitivity (recall over the
    patients of that class); balanced accuracy = mean sensitivity over the classes present."""
    outcomes = [patient_flags(e)[key] for e in entries]
    per_class = {}
    for name in classes:
        rows = [ok for e, ok in zip(entries, outcomes, strict=True) if e.get("label") == name]
        per_class[name] = {**_rate(sum(rows), len(rows), "sensitivity"), "support": len(rows)}
    recalls = [c["sensitivity"] for c in per_class.values() if c["sensitivity"] is not None]
    return {
        **_rate(sum(outcomes), len(outcomes), "accuracy"),
        "balanced_accuracy": sum(recalls) / len(recalls) if recalls else None,
        "per_class": per_class,
    }


def _slices_per_patient(entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    counts = [int(e["n_slices"]) for e in entries if isinstance(e.get("n_slices"), int)]
    if not counts:
        return None
    return {
        "min": min(counts),
        "median": float(statistics.median(counts)),
        "max": max(counts),
        "mean": round(sum(counts) / len(counts), 2),
    }


def _summed_counts(blocks: list[dict[str, Any]]) -> dict[str, int] | None:
    """malignant_to_normal summed over the folds (each patient counted in its one fold), keys in all."""
    counts = [b.get("malignant_to_normal") for b in blocks]
    if not all(isinstance(c, dict) for c in counts):
        return None
    keys = [k for k in counts[0] if all(k in c for c in counts)]
    return {k: sum(int(c[k]) for c in counts) for k in keys}


def _entries(blocks: list[dict[str, Any]], sources: Sequence[str]) -> list[dict[str, Any]]:
    """Every fold's per_patient records end to end; ValueError if an id is in two folds."""
    seen: dict[str, str] = {}
    entries = []
    for src, block in zip(sources, blocks, strict=True):
        for e in block.get("per_patient") or []:
            pid = str(e["id"])
            if pid in seen:
                raise ValueError(
                    f"patient {pid!r} is tested in both {seen[pid]} and {src}: pooling over patients "
                    "needs every patient in one test fold only (were the folds grouped by patient?)"
                )
            seen[pid] = src
            entries.append(e)
    return entries


def pool_patients(
    blocks: list[dict[str, Any]], sources: Sequence[str], classes: Sequence[str]
) -> dict[str, Any]:
    """The pooled `patient` block of one model from its folds' results.json `patient` blocks.

    Raises ValueError when a patient id is in two folds, or when the folds aggregated slices by different
    rules (a mean-rule decision pooled with a vote-rule one is no number at all)."""
    rules = {str(b.get("rule")) for b in blocks}
    if len(rules) > 1:
        raise ValueError(f"the folds aggregate slices by different rules ({', '.join(sorted(rules))})")
    entries = _entries(blocks, sources)
    if not entries:
        raise ValueError("no per_patient records to pool")
    shared = set.intersection(*(set(patient_flags(e)) for e in entries))
    attack_keys = [k for k in (blocks[0].get("attacks") or {}) if k in shared]
    attack_keys += sorted(shared - {"clean", *attack_keys, *PATIENT_ONLY_KEYS})
    first = blocks[0]
    out: dict[str, Any] = {
        "n": len(entries),
        "rule": first.get("rule"),
        "rule_text": first.get("rule_text"),
        "threat_model": first.get("threat_model"),
        "groups_from": sorted({str(b.get("groups_from")) for b in blocks}),
        "patients_per_fold": [len(b.get("per_patient") or []) for b in blocks],
        "slices_per_patient": _slices_per_patient(entries),
        "clean": _metric(entries, "clean", classes),
        "attacks": {k: _metric(entries, k, classes) for k in attack_keys},
    }
    for key in PATIENT_ONLY_KEYS:
        if key in shared:
            out[key] = _metric(entries, key, classes)
    # each outcome's correct patients in each fold (over patients_per_fold): the spread across folds
    keys = ["clean", *attack_keys, *(k for k in PATIENT_ONLY_KEYS if k in shared)]
    out["correct_per_fold"] = {
        k: [sum(patient_flags(e)[k] for e in b.get("per_patient") or []) for b in blocks] for k in keys
    }
    if "joint" in out:
        spec = same_in_every_fold({str((b.get("joint") or {}).get("spec")) for b in blocks})
        out["joint"] = {"spec": spec, **out["joint"]}
    if "worst_case" in out:
        runs = same_in_every_fold({tuple((b.get("worst_case") or {}).get("attacks") or ()) for b in blocks})
        out["worst_case"] = {"attacks": list(runs) if runs != MIXED else MIXED, **out["worst_case"]}
    out["malignant_to_normal"] = _summed_counts(blocks)
    return out


def _fold_name(fr: dict[str, Any], i: int) -> str:
    return f"fold {fr.get('fold', i)}"


def pooled_patients(
    fold_results: list[dict[str, Any]], models: Sequence[str], warnings: list[str]
) -> dict[str, Any]:
    """model -> its folds' `patient` blocks pooled over all patients (pool_patients). A model
    is left out, with a warning, when only some folds carry the block (results written before issue 31);
    a patient id in two folds raises ValueError: the folds did not keep patients whole."""
    out = {}
    for model in models:
        blocks = [(fr.get(model) or {}).get("patient") for fr in fold_results]
        if not any(isinstance(b, dict) for b in blocks):
            continue
        if not all(isinstance(b, dict) for b in blocks):
            warnings.append(f"{model}: some fold's results carry no patient block; no pooled patient numbers")
            continue
        classes = list((((fold_results[0].get(model) or {}).get("data") or {}).get("classes")) or [])
        names = [_fold_name(fr, i) for i, fr in enumerate(fold_results)]
        out[model] = pool_patients(blocks, names, classes)
    return out


def patient_side(results: list[dict[str, Any] | None]) -> dict[str, Any]:
    """{"patient": rule, joint spec and every fold's per_patient records} for a pooled comparison;
    {} unless every fold has the block (compare_results then compares no patients)."""
    blocks = [(r or {}).get("patient") for r in results]
    if not blocks or not all(isinstance(b, dict) for b in blocks):
        return {}
    records = [e for b in blocks for e in b.get("per_patient") or []]
    return {
        "patient": {"rule": blocks[0].get("rule"), "joint": blocks[0].get("joint"), "per_patient": records}
    }
