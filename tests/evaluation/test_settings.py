"""EvalSettings is the one source of evaluation budgets: nothing else may restate a default."""

from __future__ import annotations

import inspect
from dataclasses import fields

import pytest

from fortify.cli.evaluate_command import evaluate as evaluate_cli
from fortify.evaluation import evaluate_checkpoint, evaluate_transfer
from fortify.evaluation.settings import ATTACK_BUDGET_FIELDS, EvalSettings
from fortify.evaluation.specs import DEFAULT_CURVE_ATTACKS, default_attack_specs
from fortify.numbers import parse_number
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
    sig = _defaults(default_attack_specs)
    assert set(ATTACK_BUDGET_FIELDS) <= {f.name for f in fields(EvalSettings)}
    for name in ATTACK_BUDGET_FIELDS:
        assert sig[name] == getattr(D, name), name
    assert default_attack_specs() == default_attack_specs(**D.attack_budgets())
    assert "steps=100,binary_steps=5" in default_attack_specs()[2]  # CW-L2's own defaults


def test_evaluate_checkpoint_transfer_and_cli_defaults_are_eval_settings():
    ev = _defaults(evaluate_checkpoint)
    shared = {f.name for f in fields(EvalSettings)} & set(ev)
    assert {"batch_size", "examples_per_class", "sanity_restarts", "score_precision", "fold_bn"} <= shared
    for name in shared - {"eps_curve", "curve_attacks"}:
        assert ev[name] == getattr(D, name), name
    assert list(ev["eps_curve"]) == pytest.approx(D.eps_curve)
    assert list(ev["curve_attacks"]) == D.curve_attacks == list(DEFAULT_CURVE_ATTACKS)
    assert _defaults(evaluate_transfer)["batch_size"] == D.batch_size
    assert _defaults(evaluate_transfer)["attack"] == f"pgd:eps=2/255,steps={D.pgd_steps}"
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


def test_cost_estimate_uses_the_attacks_own_defaults():
    # An unstated budget is the attack's own (APGD: 100 steps), not a restated guess.
    assert attack_passes("apgd:eps=0.5,norm=l2", 100) == attack_passes("apgd:eps=0.5,norm=l2,steps=100", 100)
    assert attack_passes("strong:eps=2/255", 100) == attack_passes(
        "strong:eps=2/255,steps=100,square_queries=5000,version=full", 100
    )
