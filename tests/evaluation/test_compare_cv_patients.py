"""Issue 31 consumers in evaluation: cv/summary.json pooled over patients (each patient once; a patient in
two folds is an error) and comparison.json's McNemar over the patients both results scored."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the report package's fixtures

from report.conftest import STAGE_ACCS, results  # noqa: E402
from report.patient_fixture import LABELS, WRONG, accuracy, add_patients, class_recall  # noqa: E402

from fortify.evaluation.compare import compare_patients, compare_results  # noqa: E402
from fortify.evaluation.cv import pool_evaluations, summarize_folds  # noqa: E402
from fortify.evaluation.stats import wilson_interval  # noqa: E402


def exact_mcnemar(b01: int, b10: int) -> float:
    """Two-sided exact binomial test of the discordant pairs, written out: 2 P[Bin(n, 1/2) <= min]."""
    n = b01 + b10
    tail = sum(math.comb(n, i) for i in range(min(b01, b10) + 1)) / 2**n
    return min(1.0, 2 * tail)


def model_results(stage: str, fold: int, *, prefix: str | None = None) -> dict:
    r = results(stage, STAGE_ACCS[stage], synthetic=False, failing=False)
    r["per_sample"]["paths"] = [f"fold{fold}/{p}" for p in r["per_sample"]["paths"]]
    return add_patients(r, stage, prefix=f"f{fold}/" if prefix is None else prefix)


def cv_fold(i: int, *, prefix: str | None = None) -> dict:
    out = {m: model_results(m, i, prefix=prefix) for m in ("normal", "adversarial")}
    return {
        "fold": i,
        **out,
        "sentinel": None,
        "comparison": compare_results(out["normal"], out["adversarial"]),
    }


def test_cv_pools_each_patient_once():
    s = summarize_folds([cv_fold(0), cv_fold(1)])
    assert set(s["patient"]) == {"normal", "adversarial"} and s["warnings"] == []
    for model in ("normal", "adversarial"):
        p = s["patient"][model]
        assert p["n"] == 2 * len(LABELS) and p["patients_per_fold"] == [len(LABELS)] * 2
        assert p["rule"] == "mean" and p["slices_per_patient"]["median"] == 2.5
        for key in ("clean", "joint", "worst_case"):
            correct, n = accuracy(model, key)
            m = p[key]
            assert (m["correct"], m["n"]) == (2 * correct, 2 * n), (model, key)
            assert m["accuracy"] == pytest.approx(correct / n)
            assert m["accuracy_ci"] == pytest.approx(list(wilson_interval(2 * correct, 2 * n)))
            k, n_cls = class_recall(model, key, "malignant")
            mal = m["per_class"]["malignant"]
            assert (mal["correct"], mal["n"]) == (2 * k, 2 * n_cls)
            assert mal["sensitivity_ci"] == pytest.approx(list(wilson_interval(2 * k, 2 * n_cls)))
        assert p["attacks"]["pgd"]["correct"] == 2 * accuracy(model, "pgd")[0]
        assert p["joint"]["spec"].startswith("joint-pgd:")
    # malignant patients called normal, summed over the folds (each patient counted in its one fold)
    assert s["patient"]["normal"]["malignant_to_normal"]["joint"] == 2 * 3
    json.dumps(s, allow_nan=False)


def test_cv_pooled_comparison_over_patients():
    s = summarize_folds([cv_fold(0), cv_fold(1)])
    pc = s["pooled_comparison"]["patient"]
    assert pc["n"] == 2 * len(LABELS) and list(pc["mcnemar"]) == ["clean", "joint", "worst_case"]
    joint = pc["mcnemar"]["joint"]
    b10 = 2 * (WRONG["normal"]["joint"] - WRONG["adversarial"]["joint"])  # nested sets: all one way
    assert (joint["b01"], joint["b10"]) == (0, b10)
    assert joint["p_value"] == pytest.approx(exact_mcnemar(0, b10))


def test_cv_refuses_a_patient_in_two_folds():
    # the same patient ids in both folds (the slices differ): the folds did not keep patients whole
    with pytest.raises(ValueError, match="tested in both fold 0 and fold 1"):
        summarize_folds([cv_fold(0, prefix=""), cv_fold(1, prefix="")])
    normal = [model_results("normal", i, prefix="") for i in (0, 1)]
    with pytest.raises(ValueError, match="tested in both"):
        pool_evaluations(normal, sources=["fold-0", "fold-1"])


def test_cv_without_patient_blocks_leaves_a_gap():
    old = cv_fold(1)
    del old["adversarial"]["patient"]
    s = summarize_folds([cv_fold(0), old])
    assert list(s["patient"]) == ["normal"]
    assert any("adversarial: some fold's results carry no patient block" in w for w in s["warnings"])
    folds = [cv_fold(0), cv_fold(1)]
    for f in folds:
        for m in ("normal", "adversarial"):
            del f[m]["patient"]
    s = summarize_folds(folds)  # results written before issue 31: nothing to pool, nothing to warn about
    assert s["patient"] == {} and s["warnings"] == []
    assert s["pooled_comparison"]["patient"] is None


def test_cv_pooled_worst_case_names_its_attacks_or_says_the_folds_differ():
    s = summarize_folds([cv_fold(0), cv_fold(1)])
    taken = cv_fold(0)["adversarial"]["patient"]["worst_case"]["attacks"]
    assert "joint" in taken and s["patient"]["adversarial"]["worst_case"]["attacks"] == taken
    f1 = cv_fold(1)
    f1["adversarial"]["patient"]["worst_case"]["attacks"] = [*taken, "apgd"]
    s = summarize_folds([cv_fold(0), f1])
    assert s["patient"]["adversarial"]["worst_case"]["attacks"] == "(differs between folds)"


def test_cv_refuses_mixed_rules():
    f1 = cv_fold(1)
    f1["normal"]["patient"]["rule"] = "vote"
    with pytest.raises(ValueError, match="different rules"):
        summarize_folds([cv_fold(0), f1])


def test_pool_evaluations_pools_patients():
    pool = pool_evaluations([model_results("adversarial", i) for i in (0, 1)], sources=["fold-0", "fold-1"])
    correct, n = accuracy("adversarial", "worst_case")
    assert (pool["patient"]["worst_case"]["correct"], pool["patient"]["n"]) == (2 * correct, 2 * n)


def entry(pid: str, clean: bool, joint: bool, worst: bool, label: str = "malignant") -> dict:
    return {
        "id": pid,
        "label": label,
        "n_slices": 3,
        "clean_pred": label if clean else "normal",
        "clean_correct": clean,
        "robust": {"fgsm": clean, "pgd": clean, "joint": joint, "worst_case": worst},
        "joint_pred": label if joint else "normal",
        "slices_changed": 0,
    }


def side(entries: list[dict], rule: str = "mean") -> dict:
    return {"patient": {"rule": rule, "joint": {"spec": "joint-pgd:eps=2/255"}, "per_patient": entries}}


# (clean, joint, worst) for a and b on 14 shared patients, chosen for known discordant counts:
# clean b01=1 b10=3, joint b01=0 b10=7, worst b01=2 b10=5
SHARED = (
    [((True, True, True), (True, True, True))] * 2
    + [((True, False, False), (True, True, True))] * 2
    + [((False, False, False), (True, True, True))] * 3
    + [((True, False, False), (True, True, False))] * 2
    + [((True, True, True), (False, True, False))]
    + [((True, True, True), (True, True, False))]
    + [((False, False, False), (False, False, False))] * 3
)


def test_mcnemar_over_patients_known_discordant_counts():
    a = [entry(f"p{i}", *fa) for i, (fa, _) in enumerate(SHARED)]
    b = [entry(f"p{i}", *fb) for i, (_, fb) in enumerate(SHARED)]
    # patients of one side only, each of which would change a count if it were (wrongly) paired
    a += [entry("a-only-1", True, True, True), entry("a-only-2", False, False, False)]
    b += [entry("b-only", True, True, True)]
    b.reverse()  # matched by id, not by position
    out = compare_patients(side(a), side(b), "normal", "adversarial")
    assert (out["n"], out["a_only"], out["b_only"]) == (14, 2, 1)
    want = {"clean": (1, 3), "joint": (0, 7), "worst_case": (2, 5)}
    for key, (b01, b10) in want.items():
        row = out["mcnemar"][key]
        assert (row["b01"], row["b10"]) == (b01, b10), key
        assert row["p_value"] == pytest.approx(exact_mcnemar(b01, b10)), key
    assert out["mcnemar"]["joint"]["p_value"] == pytest.approx(2 / 128)  # 2 * (1/2)^7
    assert out["mcnemar"]["worst_case"]["p_value"] == pytest.approx(2 * (1 + 7 + 21) / 128)  # n = 7, min = 2
    assert out["mcnemar"]["clean"]["a_accuracy"] == pytest.approx(8 / 14)
    assert out["mcnemar"]["clean"]["difference"] == pytest.approx(2 / 14)


def test_patient_comparison_needs_both_blocks_and_one_rule():
    a = side([entry("p0", True, True, True)])
    assert compare_patients(a, {"per_sample": {}}) is None
    other = compare_patients(a, side([entry("p0", True, True, True)], rule="vote"))
    assert other["mcnemar"] == {} and other["not_compared"]["rule"] == {
        "normal": "mean",
        "adversarial": "vote",
    }
    b = side([entry("p0", True, False, False)])
    b["patient"]["joint"]["spec"] = "joint-pgd:eps=4/255"
    out = compare_patients(a, b)
    assert list(out["mcnemar"]) == ["clean"] and set(out["not_compared"]) == {"joint", "worst_case"}
    with pytest.raises(ValueError, match="'p0' is tested twice"):
        compare_patients(a, side([entry("p0", True, True, True), entry("p0", False, False, False)]))


def test_comparison_json_carries_patients_beside_slices():
    a, b = model_results("normal", 0), model_results("adversarial", 0)
    out = compare_results(a, b)
    assert "clean" in out["metrics"] and out["patient"]["n"] == len(LABELS)
    del a["patient"]
    assert compare_results(a, b)["patient"] is None


def test_pooled_patient_worst_case_is_paired_only_over_the_same_attacks():
    from fortify.evaluation.compare import MIXED
    from fortify.evaluation.cv import compare_pooled

    a = [model_results("normal", i) for i in (0, 1)]
    b = [model_results("adversarial", i) for i in (0, 1)]
    assert set(compare_pooled(a, b, "a", "b")["patient"]["mcnemar"]) == {"clean", "joint", "worst_case"}
    for r in b:  # b's slice worst case also took an attack a never ran (another threat model)
        r["attacks"]["apgd"] = {"spec": "apgd:eps=0.5,norm=l2"}
        r["worst_case"]["attacks"] = [*r["worst_case"]["attacks"], "apgd"]
    patient = compare_pooled(a, b, "a", "b")["patient"]
    assert set(patient["mcnemar"]) == {"clean", "joint"}
    assert "apgd:eps=0.5,norm=l2" in patient["not_compared"]["worst_case"]["b"]
    b = [model_results("adversarial", i) for i in (0, 1)]
    b[1]["patient"]["joint"]["spec"] = "joint-pgd:eps=4/255,steps=20"  # one fold's joint attack differs
    patient = compare_pooled(a, b, "a", "b")["patient"]
    assert set(patient["mcnemar"]) == {"clean"}
    assert patient["not_compared"]["joint"]["b"] == MIXED == patient["not_compared"]["worst_case"]["b"]
    # the same folds on both sides: MIXED on both is still no single measurement to pair
    assert set(compare_pooled(b, b, "a", "b")["patient"]["mcnemar"]) == {"clean"}
