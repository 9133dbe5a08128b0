"""Every script in benchmarks/ still imports and parses its command line.

The benchmarks are not run in CI (they time real work), so an API change in fortify can break one
silently: `benchmarks/training.py` imported a parser that had been removed, and nobody noticed until
it was run. Running each script's `--help` in-process catches that for the cost of the imports.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py"))


def test_there_are_benchmarks() -> None:
    assert "attacks.py" in SCRIPTS and "evaluation.py" in SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_script_imports_and_prints_help(
    script: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", [script, "--help"])
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # scripts import their siblings (recipes -> ssl_pretrain)
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(BENCHMARKS / script), run_name="__main__")
    assert stop.value.code in (0, None)
    assert "usage:" in capsys.readouterr().out
