"""Patient aggregation rules on hand-built probabilities (fortify.evaluation.patients)."""

from __future__ import annotations

import pytest
import torch

from fortify.errors import ConfigError
from fortify.evaluation.patients import (
    JOINT_CHECK,
    Patients,
    aggregate,
    check_rule,
    joint_no_weaker_check,
    patient_labels,
    patient_metrics,
    rule_text,
    slices_per_patient,
)

CLASSES = ["benign", "malignant", "normal"]


def _p(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def test_mean_rule_is_argmax_of_mean_probability():
    # Patient "b" (listed first in the data) sorts after "a"; its slices disagree but the mean says normal.
    probs = _p([0.1, 0.2, 0.7], [0.5, 0.4, 0.1], [0.2, 0.1, 0.7], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1])
    groups = ["b", "b", "b", "a", "a"]
    ids, pred = aggregate(probs, groups, "mean", CLASSES)
    assert ids == ["a", "b"]
    assert pred.tolist() == [1, 2]  # a: mean (0.35, 0.55, 0.1); b: (0.27, 0.23, 0.5)


def test_vote_rule_breaks_ties_by_mean_probability_then_by_the_worse_class():
    # a: votes benign, malignant -> tie; mean probability favours malignant.
    # b: 2 normal vs 1 benign -> normal, although the mean favours benign.
    # c: exact tie in votes and mean -> the clinically worse class (malignant over normal).
    probs = _p(
        [0.55, 0.45, 0.0],
        [0.0, 0.9, 0.1],
        [0.4, 0.0, 0.6],
        [0.45, 0.0, 0.55],
        [1.0, 0.0, 0.0],
        [0.0, 0.6, 0.4],
        [0.0, 0.4, 0.6],
    )
    groups = ["a", "a", "b", "b", "b", "c", "c"]
    _, pred = aggregate(probs, groups, "vote", CLASSES)
    assert pred.tolist() == [1, 2, 1]
    _, by_mean = aggregate(probs, groups, "mean", CLASSES)
    assert by_mean.tolist()[1] == 0  # the rules really differ on b


def test_max_malignant_rule():
    # a: one slice says malignant -> malignant although the mean says normal.
    # b: no slice says malignant but the mean's argmax is malignant -> the best other class (benign).
    probs = _p([0.0, 0.51, 0.49], [0.0, 0.0, 1.0], [0.5, 0.4, 0.1], [0.15, 0.4, 0.45])
    groups = ["a", "a", "b", "b"]
    _, mean_pred = aggregate(probs, groups, "mean", CLASSES)
    assert mean_pred.tolist() == [2, 1]
    _, pred = aggregate(probs, groups, "max:malignant", CLASSES)
    assert pred.tolist() == [1, 0]
    assert "any of its slices is predicted malignant" in rule_text("max:malignant")
    assert rule_text("mean").startswith("a patient's prediction is the argmax of the mean")


def test_bad_rules_are_one_line_config_errors():
    for bad in ("median", "max:cancer", "max:"):
        with pytest.raises(ConfigError, match="valid: mean, vote, max:benign"):
            check_rule(bad, CLASSES)


def test_labels_by_majority_and_metrics_over_patient_ids():
    # a: 2 benign + 1 malignant -> benign (mixed); b: 1 normal + 1 malignant tie -> malignant; c: normal.
    labels = torch.tensor([0, 0, 1, 2, 1, 2])
    patients = Patients.from_groups(["a", "a", "a", "b", "b", "c"])
    y, mixed = patient_labels(labels, patients, CLASSES)
    assert y.tolist() == [0, 1, 2] and mixed == 2
    probs = _p([0.9, 0.1, 0], [0.9, 0.1, 0], [0.9, 0.1, 0], [0, 0, 1], [0, 0, 1], [0, 0, 1])
    ids, pred = aggregate(probs, patients, "mean", CLASSES)
    m = patient_metrics(y, pred, CLASSES)
    assert ids == ["a", "b", "c"] and m["n"] == 3 and m["correct"] == 2
    assert m["per_class"]["malignant"]["sensitivity"] == 0.0 and m["confusion"][1][2] == 1
    assert m["accuracy_ci"][0] < 2 / 3 < m["accuracy_ci"][1]
    assert slices_per_patient(patients) == {"min": 1, "median": 2.0, "max": 3, "mean": 2.0}


def test_joint_check_fails_when_the_joint_attack_is_weaker_than_the_aggregate():
    ok = joint_no_weaker_check(3, 3, 10, ["pgd", "fgsm"])
    one = joint_no_weaker_check(4, 3, 10, ["pgd", "fgsm"])  # one patient of random-start noise tolerated
    bad = joint_no_weaker_check(5, 3, 10, ["pgd", "fgsm"])
    assert ok["check"] == JOINT_CHECK and ok["passed"] and ok["undermines"] == ["joint"] and one["passed"]
    assert not bad["passed"] and "joint 5, per-slice aggregate 3 of 10" in bad["detail"]
    assert not joint_no_weaker_check(103, 100, 200, ["pgd"])["passed"]  # 1 point on 100 patients or more


def test_settings_patient_rule_and_joint_attack():
    from fortify.attacks import AttackSpec
    from fortify.evaluation.attack_set import keyed_specs
    from fortify.evaluation.patient_run import joint_spec
    from fortify.evaluation.settings import EvalSettings

    d = EvalSettings()
    assert d.patient_rule == "mean" and d.joint_attack == AttackSpec.template("joint-pgd")
    assert not {"patient_rule", "joint_attack"} & set(d.profile_record())  # stated only when changed
    assert EvalSettings.from_dict({"joint_attack": "none"}).joint_attack is None
    off = EvalSettings.from_dict({"joint_attack": None}).profile_record()
    assert off["joint_attack"] is None and EvalSettings.from_dict(off).joint_attack is None
    # Default: eps from the threat model, the headline PGD's steps, the rule with class indices.
    s = EvalSettings.from_dict({"pgd_steps": 7, "patient_rule": "max:malignant"})
    spec = joint_spec(s, keyed_specs([AttackSpec.build("pgd", eps=2 / 255, steps=7)]), CLASSES)
    assert spec.params == {"eps": 2 / 255, "rule": "max:1", "norm": "linf", "steps": 7}
    own = EvalSettings.from_dict({"joint_attack": "joint-pgd:steps=3,chunk=4"})
    assert joint_spec(own, {}, CLASSES).params["steps"] == 3
    for bad in (
        {"patient_rule": "median"},
        {"joint_attack": "pgd:steps=3"},
        {"attacks": ["joint-pgd:eps=0.1"]},
    ):
        with pytest.raises(ConfigError):
            EvalSettings.from_dict(bad)
