"""The patient block of results.json on the phantom (fortify.evaluation.patient_block, patient_run)."""

from __future__ import annotations

import json

import pytest
import torch
from fortify_eval_fixtures import FAST_EVAL, PHANTOM, eval_settings

from fortify.data import load_manifest
from fortify.errors import ConfigError
from fortify.evaluation import evaluate_checkpoint
from fortify.evaluation.patient_block import exact_probabilities
from fortify.evaluation.patients import JOINT_CHECK, aggregate

SETTINGS = FAST_EVAL.replace(
    attacks=eval_settings(attacks=["fgsm:eps=8/255", "pgd:eps=8/255,steps=5"]).attacks,
    eps_curve=[0.0, 8 / 255],
)


def _manifest_groups(checkpoint) -> dict[str, str]:
    info = json.loads(checkpoint.with_suffix(".json").read_text())
    manifest = load_manifest(info["split"]["manifest"])
    return {e["path"]: e["group"] for e in manifest.splits["test"]}


def test_patient_block_matches_the_manifest_groups_and_resumes(tiny_checkpoint, tmp_path):
    out = tmp_path / "eval"
    r = evaluate_checkpoint(tiny_checkpoint, data=PHANTOM, settings=SETTINGS, out_dir=out, progress=False)
    groups = _manifest_groups(tiny_checkpoint)
    ps = r["per_sample"]
    assert ps["groups"] == [groups[p] for p in ps["paths"]]
    assert set(ps["probabilities"]) == {"clean", "fgsm", "pgd"}
    assert all(len(row) == 3 and abs(sum(row) - 1) < 1e-3 for row in ps["probabilities"]["clean"])
    p = r["patient"]
    ids = sorted(set(groups.values()))
    assert [row["id"] for row in p["per_patient"]] == ids and p["n"] == len(ids)
    assert p["groups_from"] == "manifest" and p["rule"] == "mean" and p["mixed_label_groups"] == 0
    assert sum(row["n_slices"] for row in p["per_patient"]) == r["data"]["n"]
    assert p["threat_model"] == {
        "norm": "linf",
        "eps": 8 / 255,
        "scope": "every slice of the scan, each within eps",
    }
    assert p["clean"]["n"] == len(ids) and set(p["attacks"]) == {"fgsm", "pgd"}
    # Anyone can recompute the patient decisions from per_sample: clean and under each attack.
    classes = r["data"]["classes"]
    for key in ("clean", "fgsm", "pgd"):
        probs = torch.tensor(ps["probabilities"][key], dtype=torch.float32)
        got_ids, preds = aggregate(probs, ps["groups"], "mean", classes)
        assert got_ids == ids
        for row, pred in zip(p["per_patient"], preds.tolist(), strict=True):
            right = classes[pred] == row["label"]
            if key == "clean":
                assert classes[pred] == row["clean_pred"]
            else:
                assert (right and row["clean_correct"]) == row["robust"][key], (row["id"], key)
    joint = p["joint"]
    assert joint["spec"] == "joint-pgd:eps=8/255,rule=mean,norm=linf,steps=5"
    assert joint["gradient_evaluations"] > 0 and joint["n"] == len(ids)
    # the targeted run at normal: only clean-correct malignant patients the untargeted run left elsewhere
    malignant_ok = sum(row["label"] == "malignant" and row["clean_correct"] for row in p["per_patient"])
    assert 0 <= joint["harmful_found"] <= joint["harmful_targeted"] <= malignant_ok
    # worst case: robust only if clean-correct and robust to every run, per-slice aggregates and joint
    for row in p["per_patient"]:
        rob = row["robust"]
        assert rob["worst_case"] == (row["clean_correct"] and rob["fgsm"] and rob["pgd"] and rob["joint"])
    assert p["worst_case"]["correct"] == sum(row["robust"]["worst_case"] for row in p["per_patient"])
    assert p["worst_case"]["attacks"] == ["fgsm", "pgd", "joint"]
    assert set(p["malignant_to_normal"]) == {"clean", "fgsm", "pgd", "joint", "worst_case"}
    check = next(c for c in r["sanity"] if c["check"] == JOINT_CHECK)
    assert check["undermines"] == ["joint"]
    assert check["passed"], check["detail"]
    assert joint["slices_changed"]["n_flipped"] == sum(
        row["clean_correct"] and not row["robust"]["joint"] for row in p["per_patient"]
    )
    # The joint units sit beside the image units and a resumed evaluation reuses them.
    saved = sorted((out / "units").glob("joint-*.safetensors"))
    assert saved
    mtimes = [f.stat().st_mtime_ns for f in saved]
    again = evaluate_checkpoint(
        tiny_checkpoint, data=PHANTOM, settings=SETTINGS, out_dir=out, progress=False, resume=True
    )
    assert [f.stat().st_mtime_ns for f in saved] == mtimes
    assert again["patient"]["per_patient"] == p["per_patient"]


def test_vote_rule_without_joint_attack_and_old_manifest(tiny_checkpoint, tmp_path):
    info = json.loads(tiny_checkpoint.with_suffix(".json").read_text())
    raw = json.loads(open(info["split"]["manifest"]).read())
    for entries in raw["splits"].values():
        for e in entries:
            e.pop("group")
    old = tmp_path / "old-split.json"
    old.write_text(json.dumps(raw))
    s = SETTINGS.replace(patient_rule="vote", joint_attack=None, limit=9)
    with pytest.warns(Warning):  # not the split the checkpoint recorded (same images, no groups)
        r = evaluate_checkpoint(tiny_checkpoint, data=PHANTOM, settings=s, split=old, progress=False)
    p = r["patient"]
    assert p["groups_from"] == "none (one group per image)" and p["n"] == r["data"]["n"] == 9
    assert [row["id"] for row in p["per_patient"]] == sorted(r["per_sample"]["paths"])
    assert p["joint"] is None and p["rule"] == "vote" and "joint" not in p["malignant_to_normal"]
    with pytest.raises(ConfigError, match="max:benign"):
        evaluate_checkpoint(
            tiny_checkpoint, data=PHANTOM, settings=s.replace(patient_rule="max:cancer"), progress=False
        )


def test_a_weak_joint_attack_fails_its_sanity_check(tiny_checkpoint):
    weak = SETTINGS.replace(joint_attack="joint-pgd:steps=1,alpha=0.00001,random_start=false", limit=24)
    r = evaluate_checkpoint(tiny_checkpoint, data=PHANTOM, settings=weak, progress=False)
    check = next(c for c in r["sanity"] if c["check"] == JOINT_CHECK)
    robust = {k: sum(row["robust"][k] for row in r["patient"]["per_patient"]) for k in ("pgd", "joint")}
    assert robust["joint"] > robust["pgd"] + 1  # the weak attack really is weaker, by more than the tolerance
    assert not check["passed"] and check["undermines"] == ["joint"], check


def test_stored_probabilities_read_back_exactly_so_a_near_tie_recomputes_as_decided():
    # Two slices whose mean ties at 4 decimals (first class wins) but favours normal in float32.
    probs = torch.tensor([[0.0, 0.99932, 0.00068], [0.0, 0.00066, 0.99934]], dtype=torch.float32)
    classes = ["benign", "malignant", "normal"]
    groups = ["malignant/scan-1", "malignant/scan-1"]
    decided = aggregate(probs, groups, "mean", classes)[1]
    rounded = torch.tensor([[round(v, 4) for v in row] for row in probs.tolist()])
    assert aggregate(rounded, groups, "mean", classes)[1] != decided  # the case is a real near-tie
    stored = json.loads(json.dumps(exact_probabilities(probs)))
    assert aggregate(torch.tensor(stored, dtype=torch.float32), groups, "mean", classes)[1] == decided
    # Every float32 reads back bit for bit, tiny and saturated values included.
    wide = torch.softmax(torch.randn(64, 3) * 40, 1)
    wide[0] = torch.tensor([1e-45, 1.0 - 2**-24, 3e-38])
    assert torch.equal(torch.tensor(json.loads(json.dumps(exact_probabilities(wide)))), wide)
