"""`reproduce --extras explain,detect,certify`: the stages beyond the study, in the run and the report."""

from __future__ import annotations

import inspect

import pytest

from fortify.errors import ConfigError
from fortify.fileio import read_json, read_yaml
from fortify.pipeline import reproduce
from fortify.pipeline.extras import EXTRAS, load, parse_extras, resolve_settings


def test_extras_are_validated_and_ordered():
    assert parse_extras("certify, explain") == ["explain", "certify"]
    assert parse_extras(None) == [] and parse_extras([]) == []
    with pytest.raises(ConfigError, match="unknown extra.*valid: explain, detect, certify"):
        parse_extras("explain,dream")


def test_every_extra_runs_with_one_call_shape():
    shapes = {
        name: [(p.name, p.kind, p.default) for p in inspect.signature(load(extra.run)).parameters.values()]
        for name, extra in EXTRAS.items()
    }
    assert len({tuple(shape) for shape in shapes.values()}) == 1, shapes
    assert [p[0] for p in shapes["explain"]][-3:] == ["progress", "cache_dir", "resume"]


@pytest.mark.parametrize("name", list(EXTRAS))
def test_profile_sections_pick_a_preset_and_override_single_fields(name):
    smoke = resolve_settings(name, {"preset": "smoke"})
    defaults = resolve_settings(name, {})
    assert smoke != defaults  # the smoke preset really is a different budget
    assert resolve_settings(name, {"preset": "smoke", "seed": 7}).seed == 7
    with pytest.raises(ConfigError, match="preset"):
        resolve_settings(name, {"preset": "huge"})
    with pytest.raises(ConfigError, match=name):
        resolve_settings(name, {"preset": "smoke", "no_such_field": 1})


@pytest.mark.real_data
@pytest.mark.slow
def test_smoke_profile_runs_every_extra_on_the_real_data(real_data_path, cache_dir, tmp_path, monkeypatch):
    """CI's check that explain, detect and certify run inside `reproduce` on IQ-OTH/NCCD (tiny budgets)."""
    monkeypatch.setenv("FORTIFY_CACHE", str(cache_dir))
    statuses: list = []
    out = reproduce(
        real_data_path,
        tmp_path / "run",
        profile="smoke",
        progress=False,
        on_stage=lambda n, s: statuses.append((n, s)),
    )
    done = [n for n, s in statuses if s == "done"]
    assert done[-4:] == ["explain", "detect", "certify", "report"]  # after the study, before the report
    assert read_yaml(out / "config.yaml")["extras"] == ["explain", "detect", "certify"]
    explain, detect, certify = (read_json(out / n / f"{n}.json") for n in ("explain", "detect", "certify"))
    assert set(explain["models"]) == {"normal", "adversarial"}
    assert detect["models"] and certify["certified"] is not None
    # the certificate's consistency check on real data: smoothed PGD never beats a certified point
    assert all(c["passed"] for c in certify["sanity"]), certify["sanity"]
    report = (out / "report" / "report.md").read_text()
    for heading in ("class-activation maps", "adaptive attacker", "Randomized smoothing"):
        assert heading in report
    # a finished extra is skipped on --resume; an extra whose model changed would rerun
    statuses.clear()
    reproduce(
        real_data_path,
        out,
        profile="smoke",
        progress=False,
        resume=True,
        on_stage=lambda n, s: statuses.append((n, s)),
    )
    assert all(s == "skipped (up to date)" for _, s in statuses)
