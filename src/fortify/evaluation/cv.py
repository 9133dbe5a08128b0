"""Summary of a K-fold cross-validated study (cv/summary.json) from the per-fold results.

One split gives one number per metric, and its Wilson interval covers only the sampling of test images.
Across folds the spread also shows what a different split and a retrained model would do. Two summaries:
- per metric, mean, std and a t-interval over the K fold values (each fold a retrained model);
- pooled: every image sits in exactly one test fold, so the per-image outcomes of all folds together
  are one accuracy over the whole dataset with a Wilson interval (and a paired normal-vs-adversarial
  comparison over all images). It describes the training *procedure*, each image scored by the model
  that did not see it.
"""

from __future__ import annotations

from typing import Any

from fortify.data.sentinel import sentinel_warning
from fortify.evaluation.compare import compare_results, pooled_side
from fortify.evaluation.cv_patients import pool_patients, pooled_patients
from fortify.evaluation.metrics import INTERVAL
from fortify.evaluation.stats import interval_or_none, mean_std_interval

FORMAT = "fortify-cv/1"
MODELS = ("normal", "adversarial")
SENTINEL_KEYS = ("accuracy", "neighbour_share")


def _float_or_none(x: Any) -> float | None:
    """A number read from results.json, or None where missing (not a parser: see fortify.number_text)."""
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def table_numbers(results: dict[str, Any] | None) -> dict[str, float | None]:
    """Table 1's numbers of one results.json: clean, each attack, combined, worst_case accuracies, plus
    the clean benign recall (when a class is named "benign") and clean balanced accuracy."""
    if not results:
        return {}
    clean = results.get("clean") or {}
    out: dict[str, float | None] = {"clean": _float_or_none(clean.get("accuracy"))}
    for key, a in (results.get("attacks") or {}).items():
        out[key] = _float_or_none((a or {}).get("accuracy"))
    for key in ("combined", "worst_case"):
        if results.get(key):
            out[key] = _float_or_none(results[key].get("accuracy"))
    benign = (clean.get("per_class") or {}).get("benign")
    if benign is not None:
        out["benign_recall"] = _float_or_none(benign.get("sensitivity"))
    out["balanced_accuracy"] = _float_or_none(clean.get("balanced_accuracy"))
    return out


def _summarize(rows: list[dict[str, float | None]]) -> dict[str, Any]:
    """metric -> mean_std_interval over the folds that have it, with the per-fold values (None = absent)."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    out = {}
    for key in keys:
        values = [row.get(key) for row in rows]
        # Every number here is a fraction: a t-interval past 0 or 1 says nothing, so it is clipped.
        defined = [v for v in values if v is not None]
        out[key] = {**mean_std_interval(defined, bounds=(0.0, 1.0)), "values": values}
    return out


def _intervals() -> dict[str, Any]:
    """How the two summaries' intervals are computed (the "interval" entry of summary.json and pool)."""
    return {"folds": "t-interval for the mean over folds, clipped to [0, 1]", "pooled": dict(INTERVAL)}


def _sentinel_row(sentinel: dict[str, Any] | None, normal: dict[str, Any] | None) -> dict[str, Any] | None:
    """The fold's split sentinel and its warning against the fold's normal model. The split records its
    sentinel before any model exists, so its own "warning" is empty; the warning is made here."""
    if not sentinel:
        return None
    row = {k: sentinel.get(k) for k in ("accuracy", "accuracy_ci", "neighbour_share", "n_test")}
    clean = (normal or {}).get("clean") or {}
    recalls = {c: m.get("sensitivity") for c, m in (clean.get("per_class") or {}).items()}
    row["warning"] = sentinel.get("warning") or sentinel_warning(
        sentinel, _float_or_none(clean.get("accuracy")), recalls
    )
    return row


def _concat_per_sample(results: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """All folds' per_sample records end to end; None unless every fold has one. Keys kept: those in
    every fold (an attack run in only some folds has no pooled number over all images)."""
    paths: list[str] = []
    parts: list[dict[str, list[int]]] = []
    for r in results:
        ps = (r or {}).get("per_sample")
        if not isinstance(ps, dict) or not isinstance(ps.get("correct"), dict):
            return None
        paths += [str(p) for p in ps.get("paths") or []]
        parts.append(ps["correct"])
    keys = [k for k in parts[0] if all(k in p for p in parts)] if parts else []
    return {"paths": paths, "correct": {k: [int(bool(v)) for p in parts for v in p[k]] for k in keys}}


def _tally(correct: int, n: int, name: str) -> dict[str, Any]:
    """{"correct", "n", name: correct / n, name_ci: Wilson interval} (None where n is 0)."""
    return {
        "correct": correct,
        "n": n,
        name: correct / n if n else None,
        f"{name}_ci": interval_or_none(correct, n, INTERVAL["level"]),
    }


def _pooled(per_sample: dict[str, Any]) -> dict[str, Any]:
    return {key: _tally(sum(v), len(v), "accuracy") for key, v in per_sample["correct"].items()}


def _pooled_per_class(
    per_sample: dict[str, Any], labels: dict[str, int], classes: list[str]
) -> dict[str, dict[str, Any]]:
    """class -> metric -> pooled recall over every fold's test images of that class, with its Wilson interval.
    Benign has ~15 scans in IQ-OTH/NCCD, so one fold's benign recall rests on 2-4 scans; pooled is the number
    to quote. `labels` maps a per-sample path to its class index (from the folds' split manifests)."""
    label_of = [labels.get(p) for p in per_sample["paths"]]
    out: dict[str, dict[str, Any]] = {}
    for c, name in enumerate(classes):
        rows = [i for i, label in enumerate(label_of) if label == c]
        out[name] = {
            key: _tally(sum(values[i] for i in rows), len(rows), "recall")
            for key, values in per_sample["correct"].items()
        }
    return out


def _comparison_row(comp: Any) -> dict[str, Any] | None:
    if not isinstance(comp, dict) or not isinstance(comp.get("metrics"), dict):
        return None
    keep = ("difference", "difference_ci", "p_value")
    return {key: {f: m.get(f) for f in keep} for key, m in comp["metrics"].items()}


def _full_strength(flags: list[bool | None]) -> bool | None:
    """False if any evaluation's attacks ran below full strength (its robust numbers are upper bounds),
    True if every evaluation says full strength, None when one recorded no budget (or there is none)."""
    if any(flag is False for flag in flags):
        return False
    return True if flags and all(flag is True for flag in flags) else None


def summarize_folds(fold_results: list[dict[str, Any]]) -> dict[str, Any]:
    """cv/summary.json from [{"fold", "normal", "adversarial", "sentinel", "comparison", "labels"}, ...]
    (see docs/results-schema.md; "labels", optional, maps each test path of the fold to its class index and
    gives the pooled per-class recall). Missing pieces (a model not evaluated in a fold, no per-sample
    records, no patient block) leave gaps and a line in "warnings" rather than failing: the summary is
    written after hours of training. A patient tested in two folds raises ValueError: its folds were not
    grouped by patient, and every pooled patient number would count it twice."""
    warnings: list[str] = []
    folds = []
    for i, fr in enumerate(fold_results):
        entry: dict[str, Any] = {"fold": fr.get("fold", i)}
        for model in MODELS:
            entry[model] = table_numbers(fr.get(model))
            if not fr.get(model):
                warnings.append(f"fold {entry['fold']}: no {model} results")
        entry["sentinel"] = _sentinel_row(fr.get("sentinel"), fr.get("normal"))
        entry["comparison"] = _comparison_row(fr.get("comparison"))
        entry["budget"] = {m: (fr.get(m) or {}).get("budget") for m in MODELS}
        folds.append(entry)

    summary: dict[str, Any] = {model: _summarize([f[model] for f in folds]) for model in MODELS}
    sentinel_rows = [f["sentinel"] or {} for f in folds]
    summary["sentinel"] = _summarize(
        [{k: _float_or_none(r.get(k)) for k in SENTINEL_KEYS} for r in sentinel_rows]
    )

    pooled: dict[str, Any] = {}
    concatenated: dict[str, dict[str, Any]] = {}
    for model in MODELS:
        per_sample = _concat_per_sample([fr.get(model) for fr in fold_results])
        if per_sample is None:
            warnings.append(f"{model}: per-sample records missing in some fold; no pooled accuracy")
            continue
        if len(set(per_sample["paths"])) != len(per_sample["paths"]):
            # An image in two test folds would be counted twice: the folds are not a partition.
            warnings.append(f"{model}: some image is in more than one test fold; no pooled accuracy")
            continue
        concatenated[model] = per_sample
        pooled[model] = _pooled(per_sample)
        labels = {p: c for fr in fold_results for p, c in (fr.get("labels") or {}).items()}
        classes = list((((fold_results[0].get(model) or {}).get("data") or {}).get("classes")) or [])
        if classes and all(p in labels for p in per_sample["paths"]):
            pooled[model]["per_class"] = _pooled_per_class(per_sample, labels, classes)

    out: dict[str, Any] = {
        "format": FORMAT,
        "k": len(fold_results),
        "interval": _intervals(),
        "full_strength": _full_strength(
            [b.get("full_strength") for f in folds for b in f["budget"].values() if isinstance(b, dict)]
        ),
        # The phantom's numbers say nothing about CT scans; the CV report must say so, as build_report does.
        "synthetic": any(
            bool(((fr.get(m) or {}).get("data") or {}).get("synthetic"))
            for fr in fold_results
            for m in MODELS
        ),
        "folds": folds,
        "summary": summary,
        "pooled": pooled,
        "patient": pooled_patients(fold_results, MODELS, warnings),
        "pooled_comparison": None,
        "warnings": warnings,
    }
    if len(concatenated) == len(MODELS):
        try:
            out["pooled_comparison"] = compare_results(
                *(pooled_side([fr.get(m) for fr in fold_results], concatenated[m]) for m in MODELS)
            )
        except ValueError as e:  # folds evaluated on different images per model
            warnings.append(f"pooled comparison impossible: {e}")
    return out


POOL_FORMAT = "fortify-pool/1"


def _class_counts(results: dict[str, Any], key: str) -> dict[str, tuple[int, int]]:
    """class -> (correct, support) for one metric (clean, an attack, worst_case) of one results.json, from
    its per-class recall (sensitivity x support is a whole number of images)."""
    m = results.get(key) if key in ("clean", "worst_case") else (results.get("attacks") or {}).get(key)
    out = {}
    for name, c in ((m or {}).get("per_class") or {}).items():
        support = c.get("support")
        recall = _float_or_none(c.get("sensitivity"))
        if isinstance(support, int) and recall is not None:
            out[name] = (round(recall * support), support)
    return out


def _attack_specs(results: dict[str, Any]) -> dict[str, str | None]:
    return {k: (a or {}).get("spec") for k, a in (results.get("attacks") or {}).items()}


def _check_one_study(results: list[dict[str, Any]], sources: list[str]) -> tuple[list[str], dict]:
    """Raise ValueError unless every image is in one fold only and every fold has the first fold's
    classes and attack specs; return those classes and specs."""
    seen: dict[str, int] = {}
    for i, r in enumerate(results):
        for p in r["per_sample"].get("paths") or []:
            if p in seen:
                raise ValueError(
                    f"{p!r} is a test image of both {sources[seen[p]]} and {sources[i]}: "
                    "pooling needs every image in one test fold only"
                )
            seen[p] = i
    first_classes = ((results[0].get("data") or {}).get("classes")) or []
    first_specs = _attack_specs(results[0])
    for src, r in zip(sources[1:], results[1:], strict=True):
        if (((r.get("data") or {}).get("classes")) or []) != first_classes:
            raise ValueError(f"{src} has other classes than {sources[0]}")
        if _attack_specs(r) != first_specs:
            raise ValueError(
                f"{src} ran other attacks than {sources[0]} ({_attack_specs(r)} against {first_specs})"
            )
    return first_classes, first_specs


def _fold_record(src: str, r: dict[str, Any]) -> dict[str, Any]:
    """One fold's entry in the pool: its numbers, sentinel, failed checks and budget."""
    sentinel = r.get("leakage_sentinel") or {}
    return {
        "source": src,
        "n": len(r["per_sample"].get("paths") or []),
        "numbers": table_numbers(r),
        "sentinel": _float_or_none(sentinel.get("accuracy")),
        # set when the fold's model does not clearly beat raw-pixel 1-NN (a leak, or little learned)
        "sentinel_warning": sentinel.get("warning"),
        "malignant_to_normal": r.get("malignant_to_normal"),
        "sanity_failed": [
            f"{c.get('check')}: {c.get('detail')}" for c in r.get("sanity") or [] if not c.get("passed")
        ],
        "full_strength": (r.get("budget") or {}).get("full_strength"),
    }


def _pooled_class_recalls(
    results: list[dict[str, Any]], keys: list[str], classes: list[str]
) -> dict[str, dict[str, Any]]:
    """class -> metric -> recall pooled over the folds, where every fold has per-class numbers."""
    per_class: dict[str, dict[str, Any]] = {}
    for key in keys:
        counts = [_class_counts(r, key) for r in results]
        for name in classes:
            if not all(name in c for c in counts):
                continue  # a fold without this metric's per-class numbers: no pooled recall
            correct, n = sum(c[name][0] for c in counts), sum(c[name][1] for c in counts)
            per_class.setdefault(name, {})[key] = _tally(correct, n, "recall")
    return per_class


def pool_evaluations(results: list[dict[str, Any]], sources: list[str] | None = None) -> dict[str, Any]:
    """One model's K-fold figures from its `fortify evaluate` results.json files, one per test fold: each
    fold's numbers, their mean, std and t-interval over folds, and the pooled accuracy over every image
    with its Wilson interval, overall and per class (what `fortify reproduce --folds K` writes for its own
    folds, for checkpoints trained elsewhere, e.g. by benchmarks/recipes.py).

    Raises ValueError unless the files form one K-fold study of one model: each has per-sample records,
    no image is in two of them (pooled accuracy counts each image once), and they share the classes and
    every attack's spec (pooling PGD-20 on one fold with PGD-10 on another would be no number at all).
    Where every fold has a `patient` block, "patient" pools it (a patient id in two folds raises too)."""
    if not results:
        raise ValueError("no results to pool")
    sources = sources or [f"fold {i}" for i in range(len(results))]
    per_sample = _concat_per_sample(results)
    if per_sample is None:
        raise ValueError("every results.json needs its per-sample records (written by fortify evaluate)")
    first_classes, first_specs = _check_one_study(results, sources)
    folds = [_fold_record(src, r) for src, r in zip(sources, results, strict=True)]
    pooled = _pooled(per_sample)
    per_class = _pooled_class_recalls(results, list(per_sample["correct"]), first_classes)
    blocks = [r.get("patient") for r in results]
    patient = (
        pool_patients(blocks, sources, first_classes) if all(isinstance(b, dict) for b in blocks) else None
    )
    m2n: dict[str, int] = {}
    for f in folds:
        for key, count in (f["malignant_to_normal"] or {}).items():
            m2n[key] = m2n.get(key, 0) + int(count)
    return {
        "format": POOL_FORMAT,
        "k": len(results),
        "interval": _intervals(),
        "classes": list(first_classes),
        "attacks": first_specs,
        "threat_model": results[0].get("threat_model"),
        # a cut budget anywhere makes every pooled robust number an upper bound
        "full_strength": _full_strength([f["full_strength"] for f in folds]),
        "synthetic": any(bool((r.get("data") or {}).get("synthetic")) for r in results),
        "folds": folds,
        "summary": _summarize([f["numbers"] for f in folds]),
        "sentinel": mean_std_interval(
            [s for f in folds if (s := f["sentinel"]) is not None], bounds=(0.0, 1.0)
        ),
        "pooled": {**pooled, "per_class": per_class},
        "malignant_to_normal": m2n or None,
        "sanity_failed": sum(len(f["sanity_failed"]) for f in folds),
        "patient": patient,  # pooled over every fold's patients; null unless every fold has the block
    }


def compare_pooled(
    a: list[dict[str, Any]], b: list[dict[str, Any]], a_name: str = "a", b_name: str = "b"
) -> dict[str, Any]:
    """Paired comparison (exact McNemar, Newcombe interval) of two models over all their folds' images:
    the per-image records of each side end to end, b's put in a's image order. Raises ValueError unless
    both sides scored the same images. A metric is compared only where both sides measured it with the
    same attacks (a worst case over PGD-20 against one over AutoAttack would flatter the weaker
    evaluation); the others are listed in `not_compared`."""
    sides = []
    for results in (a, b):
        ps = _concat_per_sample(results)
        if ps is None:
            raise ValueError("every results.json needs its per-sample records (written by fortify evaluate)")
        sides.append(ps)
    pa, pb = sides
    if sorted(pa["paths"]) != sorted(pb["paths"]):
        raise ValueError(f"{a_name!r} and {b_name!r} were evaluated on different test images")
    where = {p: i for i, p in enumerate(pb["paths"])}
    order = [where[p] for p in pa["paths"]]
    pb = {"paths": pa["paths"], "correct": {k: [v[i] for i in order] for k, v in pb["correct"].items()}}
    # compare_results pairs only the metrics both sides' folds measured alike (pooled_side records them)
    return compare_results(pooled_side(a, pa), pooled_side(b, pb), a_name, b_name)
