"""The report section reads detect.json's payload and says plainly when the detector is defeated."""

from __future__ import annotations

import copy

import pytest

from fortify.report.detect_section import section_detect
from fortify.report.doc import Document, Figure, Para, render_markdown


def _rate(k, n):
    return {"value": k / n if n else None, "k": k, "n": n, "ci": [0.1, 0.9] if n else None}


def _attack(adaptive: bool, tpr_k: int, fooled: int) -> dict:
    return {
        "spec": "adaptive-pgd:eps=0.00784" if adaptive else "pgd:eps=2/255,steps=20",
        "params": {},
        "threat_model": {"norm": "linf", "eps": 2 / 255},
        "adaptive": adaptive,
        "n_attacked": 40,
        "n_fooled": fooled,
        "auroc": 0.55 if adaptive else 0.97,
        "auroc_ci": [0.4, 0.7],
        "tpr_at_threshold": _rate(tpr_k, fooled),
        "attack_success": _rate(fooled - tpr_k, 40),
        "roc": {"fpr": [0, 0.5, 1], "tpr": [0, 0.7, 1]},
        "scores": [1.0],
        "seconds": 12.0,
    }


PAYLOAD = {
    "method": {
        "detector": "Mahalanobis",
        "threshold": "val",
        "counting": "fooled only",
        "adaptive": "joint PGD",
        "intervals": "bootstrap",
    },
    "settings": {"eps": 2 / 255},
    "adversarial_skipped": None,
    "models": {
        "normal": {
            "checkpoint": {"model": "resnet18", "mode": "standard"},
            "data": {"n_test": 158, "synthetic": False},
            "clean": {"accuracy": 0.8, "test_fpr": _rate(8, 158)},
            "detector": {
                "layers": [{"name": "net.layer4", "dim": 512, "shrinkage": 0.3}],
                "threshold": {"value": 1.2, "split": "val", "n": 158, "target_fpr": 0.05, "val_fpr": 0.044},
                "gaussians": {"n": 738},
                "head": {"n_clean": 150, "n_adversarial": 90},
            },
            "attacks": {"pgd": _attack(False, 30, 32), "adaptive": _attack(True, 3, 36)},
            "headline": {
                "attack": "adaptive",
                "tpr": 3 / 36,
                "defeated": True,
                "verdict": "detector defeated by an adaptive attack: TPR 8.3%",
                "non_adaptive_pgd": {"auroc": 0.97, "tpr": 30 / 32},
            },
        }
    },
}


def test_defeated_detector_is_an_alarm_and_adaptive_is_the_headline(tmp_path):
    doc = Document("t")
    section_detect(doc, copy.deepcopy(PAYLOAD), "detect/detect.json", tmp_path)
    md = render_markdown(doc, tmp_path)
    assert "**⚠ WARNING: detector defeated by an adaptive attack: TPR 8.3%**" in md
    assert md.index("[HEADLINE]") < md.index("[non-adaptive]")  # adaptive row first, labelled
    assert "8.3% (3/36)" in md and "93.8% (30/32)" in md and "0.550 [0.400, 0.700]" in md
    figs = [b for b in doc.blocks if isinstance(b, Figure)]
    assert len(figs) == 1 and figs[0].path.is_file()


@pytest.mark.parametrize("defeated", [False, None])
def test_no_alarm_when_not_defeated(defeated, tmp_path):
    payload = copy.deepcopy(PAYLOAD)
    payload["models"]["normal"]["headline"].update(defeated=defeated, verdict="detector still flags 90%")
    doc = Document("t")
    section_detect(doc, payload, "detect.json")
    assert not any(isinstance(b, Para) and b.kind == "alarm" for b in doc.blocks)
    assert not any(isinstance(b, Figure) for b in doc.blocks)  # no fig_dir: no figure
