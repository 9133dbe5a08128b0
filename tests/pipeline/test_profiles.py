from __future__ import annotations

import pytest

from fortify.errors import ConfigError
from fortify.pipeline import DEFENSES, attack_specs, list_profiles, load_profile


def test_shipped_profiles_load():
    assert {"smoke", "quick", "paper"} <= set(list_profiles())
    smoke, quick, paper = (load_profile(n) for n in ("smoke", "quick", "paper"))
    assert smoke.model == "smallcnn" and smoke.limit_per_class and smoke.train["epochs"] == 1
    assert quick.model == "resnet18" and quick.image_size == 128 and quick.limit_per_class is None
    assert paper.model == "resnet50" and paper.image_size == 224 and paper.pretrained
    for p in (smoke, quick, paper):
        assert p.eps == pytest.approx(2 / 255)  # headline budget, written "2/255" in the YAML
        assert all(isinstance(e, float) for e in p.evaluate.eps_curve)


def test_attack_specs_follow_profile():
    specs = attack_specs(load_profile("quick"))
    assert [s.split(":")[0] for s in specs] == ["fgsm", "pgd", "cw", "strong", "apgd"]
    assert "eps=2/255" in specs[0] and "steps=20" in specs[1]
    assert "steps=100" in specs[3] and "square_queries=1000" in specs[3]
    # APGD-L2 at the CW budget's radius
    assert "norm=l2" in specs[4] and "eps=0.502" in specs[4]
    # CW's L2 budget comes from evaluation's rule (eps * sqrt(d) / 2) at the profile's image size
    assert "max_l2=0.502" in specs[2]


def test_overrides_and_their_errors():
    p = load_profile("smoke", {"train.epochs": 3, "evaluate.limit": 5, "eps": "4/255"})
    assert p.train["epochs"] == 3 and p.evaluate.limit == 5 and p.eps == pytest.approx(4 / 255)
    with pytest.raises(ConfigError, match="unknown field"):
        load_profile("smoke", {"evaluate.pgd_stepz": 3})
    with pytest.raises(ConfigError, match="number"):
        load_profile("smoke", {"eps": "two"})


def test_unknown_profile_lists_valid_ones():
    with pytest.raises(ConfigError, match="smoke"):
        load_profile("fastest")
    assert DEFENSES == ("mixed", "pgd", "fast", "trades")
