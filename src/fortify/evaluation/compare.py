"""Paired comparison of two evaluations on the same test images (normal vs adversarially trained).

Two accuracies on the same images are not independent samples: most images are right (or wrong) for
both models, and only the images on which they disagree carry evidence about which is better. So the
difference gets Newcombe's paired interval and an exact McNemar test on the discordant images, both
from each results.json's `per_sample.correct` vectors (one 0/1 per test image, in `per_sample.paths`
order).
"""

from __future__ import annotations

from typing import Any

from fortify.attacks.spec import canonical_spec
from fortify.evaluation.cv_patients import MIXED, patient_flags, patient_side, same_in_every_fold
from fortify.evaluation.stats import mcnemar_exact, paired_difference_interval

FORMAT = "fortify-comparison/1"
LEVEL = 0.95
METHOD = {
    "difference": "accuracy of b minus accuracy of a, on the same test images",
    "interval": "Newcombe (1998) hybrid score interval for paired proportions (method 10), "
    "from Wilson score intervals",
    "level": LEVEL,
    "test": "exact McNemar: two-sided binomial test on the discordant images (b01 vs b10)",
}


PATIENT_KEYS = ("clean", "joint", "worst_case")  # the patient outcomes compared (issue 31)
PATIENT_JOINT = "patient joint"  # metric_attacks' key for the patient block's joint attack


def metric_attacks(results: list[dict[str, Any]]) -> dict[str, str]:
    """What each per-image metric of these evaluations (one, or a model's folds) measured: "clean", an
    attack's spec, or for the combined and worst case the specs of the attacks they take; MIXED where the
    folds disagree."""
    seen: dict[str, set[str]] = {}
    for r in results:
        specs = {k: str(v.get("spec")) for k, v in (r.get("attacks") or {}).items()}
        what = {"clean": "clean", **specs}
        for key in ("combined", "worst_case"):
            block = r.get(key)
            if isinstance(block, dict):
                what[key] = " + ".join(sorted(specs.get(a, str(a)) for a in block.get("attacks") or []))
        patient = r.get("patient")
        if isinstance(patient, dict):
            what[PATIENT_JOINT] = str((patient.get("joint") or {}).get("spec"))
        for key, spec in what.items():
            seen.setdefault(key, set()).add(spec)
    return {k: same_in_every_fold(v) for k, v in seen.items()}


def same_measurement(a: str | None, b: str | None) -> bool:
    """Whether two metric_attacks values are one measurement: the same attacks, however each spec was
    written (defaults named or left out, parameters in any order); never where folds disagree (MIXED)."""

    def canonical(what: str | None) -> str | None:
        return None if what is None else " + ".join(sorted(canonical_spec(p) for p in what.split(" + ")))

    return MIXED not in (a, b) and canonical(a) == canonical(b)


def comparable(
    keys_a: Any, keys_b: Any, what_a: dict[str, str], what_b: dict[str, str], a_name: str, b_name: str
) -> tuple[set[str], dict[str, dict[str, str | None]]]:
    """(metrics both sides measured with the same attacks, {other shared metric: what each side ran}).

    Pairing a worst case over PGD-20 with one over AutoAttack, or 2/255 with 4/255, would flatter the
    weaker evaluation, so such metrics are listed, not compared."""
    shared = set(keys_a) & set(keys_b)
    same = {k for k in shared if same_measurement(what_a.get(k), what_b.get(k))}
    return same, {k: {a_name: what_a.get(k), b_name: what_b.get(k)} for k in sorted(shared - same)}


def _per_sample(results: dict[str, Any], name: str) -> tuple[list[str], dict[str, list[int]]]:
    ps = results.get("per_sample")
    if not isinstance(ps, dict) or "paths" not in ps or not isinstance(ps.get("correct"), dict):
        raise ValueError(f"results of {name!r} carry no per_sample.paths/correct; re-run the evaluation")
    paths = [str(p) for p in ps["paths"]]
    correct = {}
    for key, values in ps["correct"].items():
        if len(values) != len(paths):
            raise ValueError(
                f"{name!r}: per_sample.correct[{key!r}] has {len(values)} entries for {len(paths)} paths"
            )
        correct[key] = [int(bool(v)) for v in values]
    return paths, correct


def compare_results(
    a: dict[str, Any], b: dict[str, Any], a_name: str = "normal", b_name: str = "adversarial"
) -> dict[str, Any]:
    """comparison.json content for every key in both results' `per_sample.correct`.

    Raises ValueError when the two were not evaluated on the same images in the same order (a paired
    test on mismatched images would be meaningless) or lack per-sample records."""
    paths_a, correct_a = _per_sample(a, a_name)
    paths_b, correct_b = _per_sample(b, b_name)
    if paths_a != paths_b:
        diff = sum(x != y for x, y in zip(paths_a, paths_b, strict=False)) + abs(len(paths_a) - len(paths_b))
        raise ValueError(
            f"{a_name!r} and {b_name!r} were evaluated on different test images "
            f"({len(paths_a)} vs {len(paths_b)} paths, {diff} positions differ); "
            "a paired comparison needs the same images in the same order"
        )
    n = len(paths_a)
    same, not_compared = comparable(correct_a, correct_b, _measured(a), _measured(b), a_name, b_name)
    # a's order: clean, attacks..., worst_case as evaluate wrote them
    metrics = {key: paired_row(correct_a[key], correct_b[key]) for key in correct_a if key in same}
    return {
        "format": FORMAT,
        "a": a_name,
        "b": b_name,
        "n": n,
        "method": dict(METHOD),
        "metrics": metrics,
        "not_compared": not_compared,
        "patient": compare_patients(a, b, a_name, b_name),
    }


def paired_row(ca: list[int], cb: list[int]) -> dict[str, Any]:
    """Both accuracies, b - a with Newcombe's interval, the discordant counts and the exact McNemar p."""
    n = len(ca)
    b01 = sum(x and not y for x, y in zip(ca, cb, strict=True))
    b10 = sum(y and not x for x, y in zip(ca, cb, strict=True))
    diff, lo, hi = paired_difference_interval(ca, cb, LEVEL)
    return {
        "a_accuracy": sum(ca) / n if n else None,
        "b_accuracy": sum(cb) / n if n else None,
        "difference": None if n == 0 else diff,
        "difference_ci": None if n == 0 else [lo, hi],
        "b01": b01,
        "b10": b10,
        "p_value": mcnemar_exact(b01, b10),
    }


def pooled_side(results: list[dict[str, Any] | None], per_sample: dict[str, Any]) -> dict[str, Any]:
    """One side of a comparison pooled over folds: the folds' per-image records end to end, their patient
    records, and what each metric measured over all folds (MIXED where folds differ). Without `measured`
    the patient worst case would be paired whatever attacks each side's folds ran."""
    return {
        "per_sample": per_sample,
        **patient_side(results),
        "measured": metric_attacks([r for r in results if r]),
    }


def _measured(results: dict[str, Any]) -> dict[str, str]:
    """metric_attacks of one results.json, or what pooled_side recorded over a model's folds."""
    return results.get("measured") or metric_attacks([results])


def _patient_attacks(results: dict[str, Any]) -> dict[str, str | None]:
    """What each compared patient outcome measured: the joint attack's spec, and for the worst case the
    slice-level worst case's attacks plus the joint attack; MIXED where the pooled folds differ."""
    what = _measured(results)
    joint, worst = what.get(PATIENT_JOINT), what.get("worst_case")
    return {
        "clean": "clean",
        "joint": joint,
        "worst_case": MIXED if MIXED in (joint, worst) else f"{worst} + {joint}",
    }


def _flags_by_id(block: dict[str, Any], name: str) -> dict[str, dict[str, bool]]:
    """patient id -> its outcomes; ValueError if an id repeats (a pool whose folds share a patient)."""
    out: dict[str, dict[str, bool]] = {}
    for e in block.get("per_patient") or []:
        pid = str(e["id"])
        if pid in out:
            raise ValueError(f"{name!r}: patient {pid!r} is tested twice; a paired test would count it twice")
        out[pid] = patient_flags(e)
    return out


def compare_patients(
    a: dict[str, Any], b: dict[str, Any], a_name: str = "normal", b_name: str = "adversarial"
) -> dict[str, Any] | None:
    """The paired comparison over patients present in both results (matched by id): exact McNemar and
    Newcombe's interval on the clean, joint and worst-case patient outcomes of `patient.per_patient`.
    None when either has no patient block; nothing is compared when the two aggregated slices by
    different rules, and an outcome measured with different attacks is listed in `not_compared`.
    Raises ValueError when a side lists a patient twice."""
    pa, pb = a.get("patient"), b.get("patient")
    if not (isinstance(pa, dict) and isinstance(pb, dict)):
        return None
    if pa.get("rule") != pb.get("rule"):
        rules = {a_name: pa.get("rule"), b_name: pb.get("rule")}
        return {"n": 0, "rule": None, "mcnemar": {}, "not_compared": {"rule": rules}}
    flags_a, flags_b = _flags_by_id(pa, a_name), _flags_by_id(pb, b_name)
    ids = [i for i in flags_a if i in flags_b]
    what_a, what_b = _patient_attacks(a), _patient_attacks(b)
    mcnemar, not_compared = {}, {}
    for key in PATIENT_KEYS:
        if not all(key in flags_a[i] and key in flags_b[i] for i in ids):
            continue
        if not same_measurement(what_a[key], what_b[key]):
            not_compared[key] = {a_name: what_a[key], b_name: what_b[key]}
            continue
        mcnemar[key] = paired_row([int(flags_a[i][key]) for i in ids], [int(flags_b[i][key]) for i in ids])
    return {
        "n": len(ids),
        "a_only": len(flags_a) - len(ids),  # patients of one side only: not paired, left out
        "b_only": len(flags_b) - len(ids),
        "rule": pa.get("rule"),
        "mcnemar": mcnemar,
        "not_compared": not_compared,
    }
