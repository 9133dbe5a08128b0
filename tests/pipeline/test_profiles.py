from __future__ import annotations

import pytest

from fortify.errors import ConfigError, FortifyError
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
    specs = [str(s) for s in attack_specs(load_profile("quick"))]  # typed specs, as their record text
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
    with pytest.raises(ConfigError, match="unknown key 'evaluate.pgd_stepz'"):
        load_profile("smoke", {"evaluate.pgd_stepz": 3})
    with pytest.raises(ConfigError, match="number"):
        load_profile("smoke", {"eps": "two"})


def test_unknown_profile_lists_valid_ones():
    with pytest.raises(ConfigError, match="smoke"):
        load_profile("fastest")
    assert DEFENSES == ("mixed", "pgd", "fast", "trades", "mart")


def test_a_users_profile_file_and_dotted_overrides(tmp_path):
    from fortify.pipeline.profiles import parse_assignments, profile_path

    text = (
        profile_path("smoke")
        .read_text()
        .replace("name: smoke", "name: mine")
        .replace("epochs: 1", "epochs: 3")
    )
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    mine = load_profile(str(path), parse_assignments(["evaluate.square_queries=77", "eps=4/255", "seed=5"]))
    assert mine.name == "mine" and mine.train["epochs"] == 3
    assert mine.evaluate.square_queries == 77 and mine.eps == pytest.approx(4 / 255) and mine.seed == 5
    assert attack_specs(mine)[3].params["square_queries"] == 77


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"evaluate.squre_queries": 3}, "unknown key 'evaluate.squre_queries'; valid in section 'evaluate'"),
        ({"train.epoch": 3}, "unknown key 'train.epoch'; valid in section 'train'"),
        ({"modle": "resnet18"}, "unknown key 'modle'"),
        ({"nothere.x": 1}, "unknown section 'nothere'"),
    ],
)
def test_a_misspelt_override_is_an_error_naming_the_valid_keys(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_profile("smoke", overrides)


def test_set_values_are_read_as_yaml_and_bad_assignments_refused():
    from fortify.pipeline.profiles import parse_assignments

    parsed = parse_assignments(
        ["train.epochs=5", "evaluate.eps_curve=[0, 2/255]", "pretrained=true", "eps=2/255"]
    )
    assert parsed == {
        "train.epochs": 5,
        "evaluate.eps_curve": [0, "2/255"],
        "pretrained": True,
        "eps": "2/255",
    }
    with pytest.raises(ConfigError, match="key=value"):
        parse_assignments(["epochs"])
    with pytest.raises(ConfigError, match="profile file not found"):
        load_profile("missing/profile.yaml")


def test_best_extends_quick_and_changes_only_the_model_and_the_defence():
    quick, best = load_profile("quick"), load_profile("best")
    assert quick.defense == "mixed" and best.defense == "pgd"  # the study's recipe stays quick's
    assert quick.model == "resnet18" and best.model == "smallcnn"  # quick stays the study's kind of network
    assert best.adversarial == {**quick.adversarial, "awp_gamma": 0.005, "select_on": "last"}
    assert best.name == "best" and best.description != quick.description
    changed = ("name", "description", "defense", "adversarial", "model")
    same = {k: v for k, v in quick.to_dict().items() if k not in changed}
    assert same == {k: v for k, v in best.to_dict().items() if k in same}
    # an override still reaches a value the variant inherited
    assert load_profile("best", {"adversarial.epochs": 2}).adversarial["epochs"] == 2


def test_best_eps4_is_best_with_the_threat_model_at_4_over_255():
    best, best4 = load_profile("best"), load_profile("best-eps4")
    assert best.eps == pytest.approx(2 / 255) and best4.eps == pytest.approx(4 / 255)  # trains and evaluates
    changed = ("name", "description", "eps")
    assert {k: v for k, v in best.to_dict().items() if k not in changed} == {
        k: v for k, v in best4.to_dict().items() if k not in changed
    }


def test_extends_merges_sections_and_refuses_loops_and_bad_defences(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: smoke\nname: a\ntrain: {epochs: 4}\n")
    a = load_profile(str(tmp_path / "a.yaml"))
    smoke = load_profile("smoke")
    assert a.train == {**smoke.train, "epochs": 4} and a.model == smoke.model and a.description == ""
    (tmp_path / "b.yaml").write_text(f"extends: {tmp_path / 'c.yaml'}\n")
    (tmp_path / "c.yaml").write_text(f"extends: {tmp_path / 'b.yaml'}\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_profile(str(tmp_path / "b.yaml"))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.yaml").write_text("extends: ../a.yaml\nname: d\nseed: 3\n")  # beside the file
    d = load_profile(str(tmp_path / "sub" / "d.yaml"))
    assert d.train == a.train and d.seed == 3 and d.name == "d"
    with pytest.raises(ConfigError, match="unknown defense 'pgdd'"):
        load_profile("smoke", {"defense": "pgdd"})


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"train.epochs": "abc"}, r"--set: train.epochs must be an integer, got 'abc'"),
        ({"adversarial.lr": "fast"}, r"--set: adversarial.lr must be a number, got 'fast'"),
        ({"image_size": "big"}, r"--set: image_size must be an integer, got 'big'"),
        ({"normal.augment": "maybe"}, r"--set: normal.augment must be true or false, got 'maybe'"),
        ({"fractions": "half"}, r"--set: fractions must be a list of a number"),
        ({"evaluate.square_queries": "abc"}, r"--set: evaluate.square_queries must be an integer"),
    ],
)
def test_a_value_of_the_wrong_type_names_the_key_and_the_type(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_profile("quick", overrides)


def test_wrong_types_in_a_profile_file_and_numbers_as_text(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("extends: quick\ntrain:\n  epochs: five\n")
    with pytest.raises(ConfigError, match=r"mine.yaml: train.epochs must be an integer, got 'five'"):
        load_profile(str(path))
    assert load_profile("quick", {"train.eps": "2/255"}).train["eps"] == "2/255"  # read where it is used


def test_broken_yaml_names_the_file_and_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: broken\ntrain:\n  epochs: [1,\n")
    with pytest.raises(FortifyError, match=r"broken.yaml: not valid YAML \(line 4"):
        load_profile(str(path))


def test_train_config_refuses_wrong_types_and_reads_eps_text():
    from fortify.training import TrainConfig

    with pytest.raises(ConfigError, match="training config: epochs must be an integer, got 'abc'"):
        TrainConfig(epochs="abc").validate()
    assert TrainConfig(mode="pgd", eps="2/255").validate().eps == pytest.approx(2 / 255)
