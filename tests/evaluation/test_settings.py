"""EvalSettings is the one source of evaluation budgets: nothing else may restate a default."""

from __future__ import annotations

import inspect
from dataclasses import fields

import pytest

from fortify.attacks import AttackSpec, ThreatModel, parse_spec
from fortify.cli.evaluate_command import evaluate as evaluate_cli
from fortify.errors import ConfigError
from fortify.evaluation import evaluate_checkpoint, evaluate_transfer
from fortify.evaluation.attack_set import DEFAULT_CURVE_ATTACKS, default_attack_specs, default_pgd_spec
from fortify.evaluation.settings import ATTACK_BUDGET_FIELDS, EvalSettings
from fortify.number_text import parse_number
from fortify.pipeline import load_profile
from fortify.pipeline.estimate import attack_passes

D = EvalSettings()


def _defaults(fn) -> dict:
    out = {}
    for name, p in inspect.signature(fn).parameters.items():
        default = getattr(p.default, "default", p.default)  # typer's OptionInfo holds its own default
        if default is not inspect.Parameter.empty:
            out[name] = default
    return out


def test_default_attack_specs_read_every_budget_from_eval_settings():
    assert set(ATTACK_BUDGET_FIELDS) <= {f.name for f in fields(EvalSettings)}
    assert _defaults(default_attack_specs)["settings"] == D
    specs = default_attack_specs()
    assert all(isinstance(s, AttackSpec) for s in specs)
    assert specs == default_attack_specs(D.threat_model, EvalSettings())
    assert (specs[2].params["steps"], specs[2].params["binary_steps"]) == (100, 5)  # CW-L2's own defaults
    changed = default_attack_specs(D.threat_model, EvalSettings(pgd_steps=7, cw_steps=9))
    assert changed[1].params["steps"] == 7 and changed[2].params["steps"] == 9


def test_every_stage_entry_point_takes_one_settings_object():
    # The evaluation, its transfer and the extras all take (checkpoint(s), data, settings): no loose budgets.
    for fn in (evaluate_checkpoint, evaluate_transfer):
        params = inspect.signature(fn).parameters
        assert "settings" in params and _defaults(fn)["settings"] is None
        assert not ({f.name for f in fields(EvalSettings)} & set(params)), fn.__name__


def test_evaluate_checkpoint_transfer_and_cli_defaults_are_eval_settings():
    assert list(DEFAULT_CURVE_ATTACKS) == D.curve_attacks
    assert [str(t) for t in D.curve_attacks] == ["pgd:steps=10", "strong:steps=10,square_queries=100"]
    assert str(default_pgd_spec()) == f"pgd:eps=2/255,steps={D.pgd_steps}"  # transfer's default attack
    cli = _defaults(evaluate_cli)
    assert cli["batch_size"] == D.batch_size and cli["examples_per_class"] == D.examples_per_class
    assert [parse_number(v, "eps") for v in cli["eps_curve"].split(",")] == pytest.approx(D.eps_curve)


def test_a_profile_states_only_overrides(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nevaluate:\n  cw_steps: 7\n")
    ev = load_profile(str(path)).evaluate
    assert ev.cw_steps == 7
    assert {k: v for k, v in vars(ev).items() if k != "cw_steps"} == {
        k: v for k, v in vars(D).items() if k != "cw_steps"
    }


def test_profile_attack_texts_are_parsed_once_at_load(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "name: mine\neps: 4/255\nseed: 3\nevaluate:\n  attacks: ['pgd:eps=4/255,steps=5']\n"
        "  curve_attacks: ['pgd:steps=2']\n  transfer_attack: 'fgsm:eps=4/255'\n"
    )
    ev = load_profile(str(path)).evaluate
    assert ev.attacks == [AttackSpec.build("pgd", eps=4 / 255, steps=5)]
    assert ev.curve_attacks == [AttackSpec.template("pgd", steps=2)]
    assert ev.transfer_attack == AttackSpec.build("fgsm", eps=4 / 255)
    assert ev.threat_model == ThreatModel("linf", 4 / 255) and ev.seed == 3  # the profile's top level
    record = load_profile(str(path)).to_dict()["evaluate"]  # what config.yaml says: text, no duplicates
    assert record["attacks"] == ["pgd:eps=4/255,steps=5"] and record["curve_attacks"] == ["pgd:steps=2"]
    assert "threat_model" not in record and "seed" not in record and "large_eps" not in record
    path.write_text("name: mine\nevaluate:\n  attacks: ['pgd:eps=4/255,stpes=5']\n")
    with pytest.raises(ConfigError, match="evaluate.*stpes"):
        load_profile(str(path))
    path.write_text("name: mine\nevaluate:\n  seed: 4\n")
    with pytest.raises(ConfigError, match="top level"):
        load_profile(str(path))


def test_cost_estimate_uses_the_attacks_own_defaults():
    # An unstated budget is the attack's own (APGD: 100 steps), not a restated guess.
    def passes(text):
        return attack_passes(parse_spec(text), 100)

    assert passes("apgd:eps=0.5,norm=l2") == passes("apgd:eps=0.5,norm=l2,steps=100")
    assert passes("strong:eps=2/255") == passes("strong:eps=2/255,steps=100,square_queries=5000,version=full")


def test_budget_note_counts_the_classes_actually_targeted():
    # Issue 34: with 4 classes the note said "targeted on up to 9 classes".
    from fortify.evaluation.attack_set import keyed_specs
    from fortify.evaluation.results_blocks import headline_budget

    specs = keyed_specs([parse_spec("strong:eps=2/255,n_target_classes=9")])
    assert "targeted on 3 other class(es)" in headline_budget(specs, 4)["note"]
    assert "targeted on 2 other class(es)" in headline_budget(specs, 3)["note"]
