"""Paired comparison of two results.json files and the K-fold summary, on hand-built per-sample records."""

from __future__ import annotations

import json

import pytest

from fortify.evaluation.compare import compare_results
from fortify.evaluation.cv import summarize_folds, table_numbers
from fortify.evaluation.stats import mcnemar_exact, paired_difference_interval, wilson_interval


def results(paths: list[str], correct: dict[str, list[int]], *, benign: float = 0.5) -> dict:
    """A results.json reduced to what compare/cv read (accuracies consistent with per_sample)."""
    acc = {k: sum(v) / len(v) for k, v in correct.items()}
    attacks = {k: {"accuracy": acc[k]} for k in correct if k not in ("clean", "worst_case")}
    return {
        "clean": {
            "accuracy": acc["clean"],
            "balanced_accuracy": acc["clean"] - 0.01,
            "per_class": {"benign": {"sensitivity": benign}, "malignant": {"sensitivity": 1.0}},
        },
        "attacks": attacks,
        "worst_case": {"accuracy": acc["worst_case"]},
        "per_sample": {"paths": paths, "correct": correct},
    }


PATHS = [f"img{i}.jpg" for i in range(10)]
A = {"clean": [1] * 9 + [0], "pgd": [1, 0, 0, 0, 0, 0, 0, 0, 0, 0], "worst_case": [0] * 10}
B = {"clean": [1] * 8 + [0, 0], "pgd": [1, 1, 1, 1, 1, 0, 1, 1, 1, 0], "worst_case": [0] * 9 + [1]}


def test_compare_counts_discordant_images_and_tests_them():
    out = compare_results(results(PATHS, A), results(PATHS, B))
    assert out["format"] == "fortify-comparison/1" and out["n"] == 10
    assert (out["a"], out["b"]) == ("normal", "adversarial")
    assert list(out["metrics"]) == ["clean", "pgd", "worst_case"]
    pgd = out["metrics"]["pgd"]
    assert pgd["b01"] == 0 and pgd["b10"] == 7  # a wrong / b right on 7 images
    assert pgd["a_accuracy"] == 0.1 and pgd["b_accuracy"] == 0.8
    assert pgd["difference"] == pytest.approx(0.7)
    assert pgd["p_value"] == pytest.approx(mcnemar_exact(0, 7)) == pytest.approx(2 / 128)
    _, lo, hi = paired_difference_interval(A["pgd"], B["pgd"])
    assert pgd["difference_ci"] == pytest.approx([lo, hi]) and lo > 0
    clean = out["metrics"]["clean"]
    assert (clean["b01"], clean["b10"], clean["p_value"]) == (1, 0, 1.0)
    json.dumps(out, allow_nan=False)  # JSON-ready, no NaN


def test_compare_only_keys_in_both_and_custom_names():
    b = results(PATHS, {**B, "strong": [0] * 10})
    out = compare_results(results(PATHS, A), b, a_name="m1", b_name="m2")
    assert "strong" not in out["metrics"] and (out["a"], out["b"]) == ("m1", "m2")


def test_compare_refuses_different_images():
    with pytest.raises(ValueError, match="different test images"):
        compare_results(results(PATHS, A), results(list(reversed(PATHS)), B))
    with pytest.raises(ValueError, match="different test images"):
        compare_results(results(PATHS, A), results(PATHS[:9], {k: v[:9] for k, v in B.items()}))
    with pytest.raises(ValueError, match="per_sample"):
        compare_results({"clean": {}}, results(PATHS, B))


def fold(i: int, paths: list[str], a: dict, b: dict, sentinel_acc: float) -> dict:
    ra, rb = results(paths, a, benign=0.4 + 0.1 * i), results(paths, b, benign=0.9)
    return {
        "fold": i,
        "normal": ra,
        "adversarial": rb,
        "sentinel": {
            "accuracy": sentinel_acc,
            "accuracy_ci": [0.1, 0.5],
            "neighbour_share": 0.0,
            "warning": None,
        },
        "comparison": compare_results(ra, rb),
    }


def test_table_numbers_are_table1_metrics():
    t = table_numbers(results(PATHS, A, benign=0.7))
    assert t == {
        "clean": 0.9,
        "pgd": 0.1,
        "worst_case": 0.0,
        "benign_recall": 0.7,
        "balanced_accuracy": pytest.approx(0.89),
    }
    assert table_numbers(None) == {}


def test_summarize_folds_means_pools_and_compares():
    f0 = fold(0, PATHS, A, B, 0.3)
    f1 = fold(1, [f"x{i}" for i in range(10)], B, A, 0.5)  # second fold: models swapped outcomes
    s = summarize_folds([f0, f1])
    assert s["format"] == "fortify-cv/1" and s["k"] == 2 and s["warnings"] == []
    assert [f["fold"] for f in s["folds"]] == [0, 1]
    assert s["folds"][0]["normal"]["clean"] == 0.9 and s["folds"][1]["normal"]["clean"] == 0.8
    assert s["folds"][0]["sentinel"]["accuracy"] == 0.3
    assert s["folds"][0]["comparison"]["pgd"]["p_value"] == pytest.approx(2 / 128)
    clean = s["summary"]["normal"]["clean"]
    assert clean["values"] == [0.9, 0.8] and clean["mean"] == pytest.approx(0.85) and clean["n"] == 2
    assert clean["std"] == pytest.approx(0.0707107, abs=1e-6) and clean["ci"][0] < 0.8 < 0.9 < clean["ci"][1]
    assert s["summary"]["normal"]["benign_recall"]["values"] == [0.4, 0.5]
    assert s["summary"]["sentinel"]["accuracy"]["mean"] == pytest.approx(0.4)
    # pooled: all 20 images once, Wilson interval on the total
    pooled = s["pooled"]["normal"]["clean"]
    assert (pooled["correct"], pooled["n"], pooled["accuracy"]) == (17, 20, 0.85)
    assert pooled["accuracy_ci"] == pytest.approx(list(wilson_interval(17, 20)))
    assert s["pooled"]["adversarial"]["pgd"]["correct"] == 1 + 8
    pc = s["pooled_comparison"]["metrics"]["pgd"]
    assert pc["b01"] == 7 and pc["b10"] == 7 and pc["p_value"] == 1.0
    json.dumps(s, allow_nan=False)


def test_summarize_folds_warns_where_the_normal_model_does_not_beat_the_split_sentinel():
    # The split records its sentinel before any model exists (warning None); the summary judges it
    # against each fold's normal model: fold 0's 90% clears 0.3 by far, fold 1's 80% does not clear 0.78.
    s = summarize_folds([fold(0, PATHS, A, B, 0.3), fold(1, [f"x{i}" for i in range(10)], B, A, 0.78)])
    assert s["folds"][0]["sentinel"]["warning"] is None
    warning = s["folds"][1]["sentinel"]["warning"]
    assert warning.startswith("LEAKAGE SUSPECTED") and "80.0%" in warning and "78.0%" in warning


def test_summarize_folds_tolerates_gaps():
    f0 = fold(0, PATHS, A, B, 0.3)
    f1 = fold(1, PATHS, A, B, 0.3)  # the same images twice: not a partition
    f1["adversarial"] = None
    f1["sentinel"] = None
    s = summarize_folds([f0, f1])
    assert s["summary"]["adversarial"]["clean"]["values"] == [0.8, None]
    assert s["summary"]["adversarial"]["clean"]["n"] == 1
    assert s["folds"][1]["sentinel"] is None and s["summary"]["sentinel"]["accuracy"]["values"] == [0.3, None]
    assert "normal" not in s["pooled"] and "adversarial" not in s["pooled"]
    assert s["pooled_comparison"] is None
    assert any("more than one test fold" in w for w in s["warnings"])
    assert any("no adversarial results" in w for w in s["warnings"])
    json.dumps(s, allow_nan=False)


def test_summarize_folds_pools_recall_per_class_from_the_folds_labels():
    f0 = fold(0, PATHS, A, B, 0.3)
    f1 = fold(1, [f"x{i}" for i in range(10)], B, A, 0.5)
    for f in (f0, f1):
        for model in ("normal", "adversarial"):
            f[model]["data"] = {"classes": ["benign", "malignant"]}
    f0["labels"] = {p: int(i >= 3) for i, p in enumerate(PATHS)}  # img0-2 benign
    f1["labels"] = {f"x{i}": int(i >= 5) for i in range(10)}  # x0-4 benign
    pc = summarize_folds([f0, f1])["pooled"]["normal"]["per_class"]
    # normal: fold 0 clean A (img9 wrong), fold 1 clean B (x8, x9 wrong)
    assert (pc["benign"]["clean"]["correct"], pc["benign"]["clean"]["n"]) == (3 + 5, 8)
    assert (pc["malignant"]["clean"]["correct"], pc["malignant"]["clean"]["n"]) == (6 + 3, 12)
    # pgd: A has img0 only; B has x0-4, x6-8
    assert pc["benign"]["pgd"]["correct"] == 1 + 5 and pc["malignant"]["pgd"]["correct"] == 0 + 3
    assert pc["malignant"]["pgd"]["recall_ci"] == pytest.approx(list(wilson_interval(3, 12)))
    f1["labels"].pop("x9")  # one image without a label: no per-class numbers rather than wrong ones
    assert "per_class" not in summarize_folds([f0, f1])["pooled"]["normal"]


def per_class_results(paths: list[str], correct: dict[str, list[int]], labels: list[int]) -> dict:
    """results() plus what a real results.json carries per class (recall and support per metric), the
    classes, the sentinel, the sanity checks and the attack specs."""
    r = results(paths, correct)
    classes = ["benign", "malignant", "normal"]

    def per_class(values: list[int]) -> dict:
        out = {}
        for c, name in enumerate(classes):
            rows = [v for v, label in zip(values, labels, strict=True) if label == c]
            out[name] = {"sensitivity": sum(rows) / len(rows), "support": len(rows)}
        return out

    r["clean"]["per_class"] = per_class(correct["clean"])
    r["worst_case"]["per_class"] = per_class(correct["worst_case"])
    for k, a in r["attacks"].items():
        a["per_class"] = per_class(correct[k])
        a["spec"] = f"{k}:eps=2/255,steps=20"
    r["data"] = {"classes": classes, "synthetic": False}
    r["leakage_sentinel"] = {"accuracy": 0.5}
    r["malignant_to_normal"] = {"clean": 1, "pgd": 2, "worst_case": 3}
    r["sanity"] = [{"check": "more steps", "passed": True, "detail": "ok"}]
    r["budget"] = {"full_strength": True}
    return r


LABELS = [0, 0, 1, 1, 1, 1, 2, 2, 2, 2]


def test_pool_evaluations_pools_each_image_once_overall_and_per_class():
    from fortify.evaluation.cv import pool_evaluations

    r0 = per_class_results(PATHS, A, LABELS)
    r1 = per_class_results([f"x{i}" for i in range(10)], B, LABELS)
    r1["sanity"][0]["passed"] = False
    r1["budget"]["full_strength"] = False
    r1["leakage_sentinel"]["warning"] = "LEAKAGE SUSPECTED: ..."
    pool = pool_evaluations([r0, r1], sources=["fold-0", "fold-1"])
    assert pool["format"] == "fortify-pool/1" and pool["k"] == 2
    assert pool["summary"]["clean"]["values"] == [0.9, 0.8]
    assert pool["summary"]["clean"]["mean"] == pytest.approx(0.85)
    clean = pool["pooled"]["clean"]
    assert (clean["correct"], clean["n"]) == (17, 20)
    assert clean["accuracy_ci"] == pytest.approx(list(wilson_interval(17, 20)))
    # benign: images 0-1 of each fold; A right on both, B right on both (clean); pgd: A 1 of 2, B 2 of 2
    benign = pool["pooled"]["per_class"]["benign"]
    assert (benign["clean"]["correct"], benign["clean"]["n"]) == (4, 4)
    assert (benign["pgd"]["correct"], benign["pgd"]["n"]) == (3, 4)
    # normal: images 6-9; A clean 3 of 4 (image 9 wrong), B clean 2 of 4
    assert pool["pooled"]["per_class"]["normal"]["clean"]["correct"] == 5
    assert pool["malignant_to_normal"] == {"clean": 2, "pgd": 4, "worst_case": 6}
    assert pool["sentinel"]["mean"] == pytest.approx(0.5)
    assert [f["sentinel_warning"] for f in pool["folds"]] == [None, "LEAKAGE SUSPECTED: ..."]
    assert pool["sanity_failed"] == 1 and pool["folds"][1]["sanity_failed"] == ["more steps: ok"]
    assert pool["full_strength"] is False  # one cut budget makes every robust number an upper bound
    assert pool["attacks"] == {"pgd": "pgd:eps=2/255,steps=20"}
    json.dumps(pool, allow_nan=False)


def test_pool_evaluations_refuses_what_is_not_one_k_fold_study():
    from fortify.evaluation.cv import pool_evaluations

    r0 = per_class_results(PATHS, A, LABELS)
    with pytest.raises(ValueError, match="test image of both fold-0 and fold-1"):
        pool_evaluations([r0, per_class_results(PATHS, B, LABELS)], sources=["fold-0", "fold-1"])
    other = per_class_results([f"x{i}" for i in range(10)], B, LABELS)
    other["attacks"]["pgd"]["spec"] = "pgd:eps=2/255,steps=10"
    with pytest.raises(ValueError, match="other attacks"):
        pool_evaluations([r0, other])
    other = per_class_results([f"x{i}" for i in range(10)], B, LABELS)
    other["data"]["classes"] = ["a", "b", "c"]
    with pytest.raises(ValueError, match="other classes"):
        pool_evaluations([r0, other])
    with pytest.raises(ValueError, match="per-sample"):
        pool_evaluations([r0, {"clean": {}}])


def test_compare_pooled_pairs_images_by_path_whatever_the_fold_order():
    from fortify.evaluation.cv import compare_pooled

    xs = [f"x{i}" for i in range(10)]
    a = [per_class_results(PATHS, A, LABELS), per_class_results(xs, A, LABELS)]
    b = [per_class_results(xs, B, LABELS), per_class_results(PATHS, B, LABELS)]  # folds in the other order
    comp = compare_pooled(a, b, "a", "b")
    assert comp["n"] == 20
    assert (comp["metrics"]["pgd"]["b01"], comp["metrics"]["pgd"]["b10"]) == (0, 14)
    with pytest.raises(ValueError, match="different test images"):
        compare_pooled(a, b[:1], "a", "b")


def test_compare_pooled_pairs_only_what_both_sides_measured_with_the_same_attacks():
    from fortify.evaluation.compare import MIXED
    from fortify.evaluation.cv import compare_pooled

    xs = [f"x{i}" for i in range(10)]
    a = [per_class_results(PATHS, A, LABELS), per_class_results(xs, A, LABELS)]
    b = [per_class_results(PATHS, B, LABELS), per_class_results(xs, B, LABELS)]
    for r in b:  # the other model was attacked at another budget: its "pgd" is another measurement
        r["attacks"]["pgd"]["spec"] = "pgd:eps=8/255,steps=20"
        r["worst_case"]["attacks"] = ["pgd"]
    for r in a:
        r["worst_case"]["attacks"] = ["pgd"]
    comp = compare_pooled(a, b, "a", "b")
    assert set(comp["metrics"]) == {"clean"}
    assert comp["not_compared"]["pgd"] == {"a": "pgd:eps=2/255,steps=20", "b": "pgd:eps=8/255,steps=20"}
    assert comp["not_compared"]["worst_case"]["b"] == "pgd:eps=8/255,steps=20"
    b[1]["attacks"]["pgd"]["spec"] = "pgd:eps=2/255,steps=20"  # folds that disagree are not one measurement
    assert compare_pooled(a, b, "a", "b")["not_compared"]["pgd"]["b"] == MIXED
    for r in b:  # the same attack written with its default named and the parameters reordered: paired
        r["attacks"]["pgd"]["spec"] = "pgd:steps=20,restarts=1,eps=2/255"
    comp = compare_pooled(a, b, "a", "b")
    assert set(comp["metrics"]) == {"clean", "pgd", "worst_case"} and comp["not_compared"] == {}
