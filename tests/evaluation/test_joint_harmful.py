"""The joint attack's targeted run at the costly mistake (fortify.evaluation.patient_run)."""

from __future__ import annotations

import torch
from fortify_eval_fixtures import FAST_EVAL
from hand_models import BenignUpNormalDown

from fortify.attacks import AttackSpec
from fortify.evaluation.patient_run import JointPlan, run_joint_unit
from fortify.evaluation.patients import Patients
from fortify.evaluation.unit_run import UnitPlan
from fortify.runtime import Runtime


def _run(harmful, eps: float = 0.06):
    # patient "a": malignant, 3 slices at 0.5; patient "b": benign, 2 slices at 0.56 (clean benign)
    x = torch.cat([torch.full((3, 1, 4, 4), 0.5), torch.full((2, 1, 4, 4), 0.56)])
    y = torch.tensor([1, 1, 1, 0, 0])
    rt = Runtime.resolve("cpu", "fp32")
    settings = FAST_EVAL.replace(seed=0)
    plan = UnitPlan(BenignUpNormalDown(), x, y, {}, {}, None, settings, rt, rt, [])
    spec = AttackSpec.build("joint-pgd", eps=eps, steps=40, rule="mean", chunk=2, random_start=False)
    patients = Patients.from_groups(["a", "a", "a", "b", "b"])
    jp = JointPlan(spec, patients, torch.tensor([1, 0]), "mean", [1, 0, 2], harmful)
    return run_joint_unit(plan, jp, 0, slice(0, 2), lambda _n: None)


def test_a_malignant_patient_sent_to_benign_is_attacked_again_towards_normal():
    without = _run(None)
    assert without.tensors["pred"].tolist()[0] == 0  # untargeted alone: malignant -> benign
    assert without.meta["harmful_targeted"] == 0
    unit = _run((1, 2))
    assert unit.tensors["pred"].tolist()[0] == 2  # the costly mistake, found by the targeted run
    assert unit.meta["harmful_targeted"] == 1 and unit.meta["harmful_found"] == 1  # only patient "a"
    assert unit.tensors["attacked"].tolist() == [True, True]
    assert unit.tensors["slices_changed"].tolist()[0] == 3
    # the slices kept are the targeted run's: every one of patient a's slices now reads normal
    assert unit.tensors["prob"][:3].argmax(1).tolist() == [2, 2, 2]


def test_a_targeted_run_that_falls_short_keeps_the_untargeted_result():
    unit = _run((1, 2), eps=0.04)  # within 0.04 the mean cannot get below 0.45
    assert unit.tensors["pred"].tolist()[0] == 0
    assert unit.meta["harmful_targeted"] == 1 and unit.meta["harmful_found"] == 0
