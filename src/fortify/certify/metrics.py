"""Certified and empirical accuracies from per-image records (pure functions, JSON-ready output).

A per-image record holds `label`, CERTIFY's `prediction` (-1 = abstain) and `radius` (None when
abstaining), and `attack`: one entry per attack radius with the hard smoothed classifier's
`majority` vote and `predict` (PREDICT's answer, -1 = abstain) on the attacked image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from fortify.intervals import interval_or_none

ABSTAIN = -1


def certified_correct(rec: dict, radius: float) -> bool:
    """Certified at `radius` and right: the smoothed class is the label and no L2 perturbation smaller than
    rec["radius"] changes it (Cohen et al.'s "certified accuracy at radius r" counts radius >= r)."""
    return rec["prediction"] == rec["label"] and rec["radius"] is not None and rec["radius"] >= radius


def _block(correct: int, n: int) -> dict:
    return {
        "correct": correct,
        "n": n,
        "accuracy": correct / n if n else None,
        "accuracy_ci": interval_or_none(correct, n),
    }


def certified_at(records: Sequence[dict], radius: float) -> dict:
    return {"radius": radius, **_block(sum(certified_correct(r, radius) for r in records), len(records))}


def curve_radii(records: Sequence[dict], points: int = 41) -> list[float]:
    """0 up to just past the largest certified radius, so the curve visibly reaches 0."""
    top = max((r["radius"] for r in records if r["radius"] is not None), default=0.0)
    if top <= 0:
        return [0.0, 0.05]
    step = top / (points - 1)
    return [round(i * step, 6) for i in range(points)] + [round(top + step, 6)]


def certified_curve(records: Sequence[dict], radii: Sequence[float]) -> list[list[float]]:
    n = max(len(records), 1)
    return [[float(r), sum(certified_correct(x, r) for x in records) / n] for r in radii]


def _attack_entry(rec: dict, radius: float) -> dict | None:
    for a in rec.get("attack") or []:
        if math.isclose(a["radius"], radius, rel_tol=0, abs_tol=1e-12):
            return a
    return None


def empirical_at(records: Sequence[dict], radius: float) -> dict:
    """Accuracy of the smoothed classifier on the attacked images: its majority vote (no abstention) and
    PREDICT (abstentions count as wrong); `broken` counts images certified right at this radius that
    PREDICT now assigns to another class — impossible unless the certificate or the code is wrong
    (or the 1 - alpha event failed)."""
    entries = [(rec, _attack_entry(rec, radius)) for rec in records]
    missing = sum(a is None for _, a in entries)
    if missing:
        raise ValueError(f"{missing} record(s) have no attack at radius {radius}")
    majority = sum(a["majority"] == rec["label"] for rec, a in entries)
    predict = sum(a["predict"] == rec["label"] for rec, a in entries)
    broken = [
        rec["index"]
        for rec, a in entries
        if certified_correct(rec, radius) and a["predict"] not in (ABSTAIN, rec["label"])
    ]
    flipped = [
        rec["index"] for rec, a in entries if certified_correct(rec, radius) and a["majority"] != rec["label"]
    ]
    n = len(records)
    return {
        "radius": radius,
        **_block(majority, n),
        "predict": _block(predict, n),
        "predict_abstain": sum(a["predict"] == ABSTAIN for _, a in entries),
        "attacked": sum(bool(a.get("attacked")) for _, a in entries),
        "broken": broken,
        "majority_flipped_on_certified": flipped,
    }


def abstain_block(records: Sequence[dict]) -> dict:
    k, n = sum(r["prediction"] == ABSTAIN for r in records), len(records)
    return {"count": k, "n": n, "rate": k / n if n else None, "rate_ci": interval_or_none(k, n)}


def per_class(records: Sequence[dict], classes: Sequence[str], radii: Sequence[float]) -> dict[str, dict]:
    out = {}
    for c, name in enumerate(classes):
        mine = [r for r in records if r["label"] == c]
        out[name] = {
            "n": len(mine),
            "abstain": abstain_block(mine),
            "certified": [certified_at(mine, r) for r in radii],
        }
    return out


def consistency_check(certified: Sequence[dict], empirical: Sequence[dict]) -> dict:
    """Sanity check: at every attacked radius, empirical accuracy >= certified accuracy, and no certified
    point is broken. A failure means a bug or a broken certificate (or, with probability <= alpha per
    image, the certificate's own failure event): the certified numbers must not be trusted then."""
    rows, ok = [], True
    for c, e in zip(certified, empirical, strict=True):
        ge = e["correct"] >= c["correct"]
        ok = ok and ge and not e["broken"]
        rows.append(
            f"r={c['radius']:.3g}: certified {c['correct']}/{c['n']}, empirical {e['correct']}/{e['n']}"
            + ("" if ge else " (empirical < certified)")
            + (f", broken {len(e['broken'])}" if e["broken"] else "")
        )
    detail = "; ".join(rows)
    if not ok and not any(e["broken"] for e in empirical):
        detail += (
            ". FAILED on the majority vote only: certified image(s) lost the vote on the attacked image "
            "but PREDICT's binomial test did not confirm another class, which sampling can do right at the "
            "edge of a certified ball; still treat it as a possible bug or broken certificate"
        )
    elif not ok:
        detail += (
            ". FAILED: an attacked image beats a certificate; this is a bug or a broken certificate "
            "(or a 1 - alpha event failed), and the certified accuracies above must not be trusted"
        )
    return {
        "check": "empirical (smoothed PGD) accuracy >= certified accuracy at every radius; "
        "no certified point broken",
        "passed": ok,
        "detail": detail,
        "undermines": ["certified"],
    }
