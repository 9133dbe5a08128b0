"""Spec strings: parsing, validation, round-trips, run_attack."""

from __future__ import annotations

import inspect

import pytest
import torch

from fortify.attacks import ATTACKS, AttackSpec, ThreatModel, parse_spec, pgd, run_attack
from fortify.errors import FortifyError, SpecError

EXAMPLES = {
    "fgsm:eps=4/255": ("fgsm", {"eps": 4 / 255}),
    "pgd:eps=4/255,steps=20,alpha=1/255,restarts=1": (
        "pgd",
        {"eps": 4 / 255, "steps": 20, "alpha": 1 / 255, "restarts": 1},
    ),
    "pgd:norm=l2,eps=0.5": ("pgd", {"norm": "l2", "eps": 0.5}),
    "cw:steps=100,binary_steps=5,c=0.1,kappa=0,max_l2=0.5": (
        "cw",
        {"steps": 100, "binary_steps": 5, "c": 0.1, "kappa": 0.0, "max_l2": 0.5},
    ),
    "apgd:loss=dlr,eps=4/255": ("apgd", {"loss": "dlr", "eps": 4 / 255}),
    "strong:eps=4/255": ("strong", {"eps": 4 / 255}),
    "strong:eps=2/255,steps=100,square_queries=5000": (
        "strong",
        {"eps": 2 / 255, "steps": 100, "square_queries": 5000},
    ),
    "square:eps=2/255,queries=1000": ("square", {"eps": 2 / 255, "queries": 1000}),
    "square:norm=l2,eps=0.5,p_init=0.3": ("square", {"norm": "l2", "eps": 0.5, "p_init": 0.3}),
    "pgd:eps=8/255,early_stop=true,random_start=false": (
        "pgd",
        {"eps": 8 / 255, "early_stop": True, "random_start": False},
    ),
}


@pytest.mark.parametrize("text", EXAMPLES)
def test_examples_parse_with_types_and_round_trip(text):
    spec = parse_spec(text)
    name, params = EXAMPLES[text]
    assert spec.name == name and spec.params == params
    for key, value in spec.params.items():
        assert type(value) is type(params[key]), key  # steps is int, kappa=0 is float, flags are bool
    assert parse_spec(str(spec)) == spec
    assert parse_spec(spec) == spec


def test_threat_models():
    assert parse_spec("pgd:eps=4/255").threat_model() == ThreatModel("linf", 4 / 255)
    assert parse_spec("pgd:norm=l2,eps=0.5").threat_model() == ThreatModel("l2", 0.5)
    assert parse_spec("cw:steps=10").threat_model() is None
    assert parse_spec("cw:max_l2=1.5").threat_model() == ThreatModel("l2", 1.5)
    assert parse_spec("strong:eps=8/255").threat_model().eps == 8 / 255


@pytest.mark.parametrize(
    "bad, fragment",
    [
        ("nope:eps=1", "valid: apgd, cw, fgsm, joint-pgd, pgd, square, strong"),
        ("square:eps=4/255,queries=0", "queries must be >= 1"),
        ("square:eps=4/255,p_init=1.5", "p_init must be in (0, 1]"),
        ("strong:eps=4/255,square_queries=-1", "square_queries must be >= 0"),
        ("pgd:epz=4/255", "valid: eps, norm, steps"),
        ("pgd:eps=-4/255", "eps must be >= 0"),
        ("pgd:eps=4/255,steps=0", "steps must be >= 1"),
        ("pgd:eps=4/255,norm=l1", "unknown norm"),
        ("pgd:eps=4/255,loss=hinge", "unknown loss"),
        ("pgd:eps=1/0", "not a number"),
        ("pgd:eps=abc", "not a number"),
        ("pgd:eps=4/255,steps=2.5", "whole number"),
        ("pgd:eps=4/255,early_stop=maybe", "boolean"),
        ("pgd:steps=10", "needs eps"),
        ("pgd:eps", "key=value"),
        ("pgd:eps=1,eps=2", "twice"),
        ("cw:c=0", "c must be > 0"),
        ("pgd:eps=4/255,generator=1", "no parameter 'generator'"),
    ],
)
def test_bad_specs_are_one_line_spec_errors(bad, fragment):
    with pytest.raises(SpecError) as info:
        parse_spec(bad)
    assert isinstance(info.value, FortifyError)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_every_keyword_parameter_is_settable_from_a_spec():
    """The parser validates against the signatures, so no parameter can drift out of reach."""
    samples = {"bool": "true", "int": "2", "float": "0.5", "str": None}
    for name, fn in ATTACKS.items():
        for param in inspect.signature(fn).parameters.values():
            if param.kind != inspect.Parameter.KEYWORD_ONLY or param.name == "generator":
                continue
            if isinstance(param.default, str):
                value = param.default
            else:
                kind = next(k for k in ("bool", "int", "float") if k in str(param.annotation))
                value = samples[kind]
            extra = "" if param.name == "eps" or name == "cw" else ",eps=0.1"
            spec = parse_spec(f"{name}:{param.name}={value}{extra}")
            assert param.name in spec.params


def test_replace_makes_a_validated_copy():
    spec = parse_spec("pgd:eps=4/255,steps=20")
    assert spec.replace(eps=8 / 255) == AttackSpec("pgd", {"eps": 8 / 255, "steps": 20})
    with pytest.raises(SpecError):
        spec.replace(eps=-1.0)


def test_run_attack_equals_direct_call(tiny_model, test_batch):
    x, y = test_batch[0][:16], test_batch[1][:16]
    a = run_attack("pgd:eps=8/255,steps=3", tiny_model, x, y, generator=torch.Generator().manual_seed(0))
    b = pgd(tiny_model, x, y, eps=8 / 255, steps=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_a_template_sets_no_eps_of_its_own():
    # A curve attack's eps is set by each point of the curve: an eps written in the template is dropped.
    written = parse_spec("pgd:eps=2/255,steps=3", template=True)
    assert written == AttackSpec.template("pgd", steps=3) and str(written) == "pgd:steps=3"
    assert written.at_eps(8 / 255).params == {"steps": 3, "eps": 8 / 255}


def test_canonical_spec_writes_defaults_out_so_one_attack_reads_one_way():
    from fortify.attacks.spec import canonical_spec

    a = canonical_spec("pgd:eps=2/255,steps=20,early_stop=true")
    assert a == canonical_spec("PGD:early_stop=true,restarts=1,steps=20,eps=2/255")
    assert parse_spec(a).params["restarts"] == 1  # still a spec that parses, its default named
    assert a != canonical_spec("pgd:eps=2/255,steps=20,early_stop=true,restarts=2")
    # strong's default version is "full": naming "standard" is another attack, not another text
    assert canonical_spec("strong:eps=2/255") == canonical_spec("strong:eps=2/255,version=full")
    assert canonical_spec("strong:eps=2/255") != canonical_spec("strong:eps=2/255,version=standard")
    assert canonical_spec("no-such-attack:eps=1") == "no-such-attack:eps=1"
