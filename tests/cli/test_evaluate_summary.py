"""`fortify evaluate`'s console summary: what it prints from a results.json, without running anything."""

from __future__ import annotations

from rich.console import Console

from fortify.cli.evaluate_command import print_summary


def _results(m2n: dict | None, leak: str | None = None) -> dict:
    block = {"accuracy": 0.9, "balanced_accuracy": 0.8}
    return {
        "data": {"n": 10, "image_size": 32, "synthetic": False},
        "checkpoint": {"model": "smallcnn", "mode": "standard"},
        "clean": block,
        "attacks": {"fgsm": {**block, "threat_model": {"norm": "linf", "eps": 2 / 255}, "success_rate": 0.1}},
        "worst_case": {**block, "attacks": ["fgsm"]},
        "curves": {},
        "sanity": [],
        "malignant_to_normal": m2n,
        "leakage_sentinel": {"accuracy": 0.99, "warning": leak} if leak else {"accuracy": 0.3},
    }


def _printed(results: dict, capsys) -> tuple[str, str]:
    print_summary(results, Console(width=200, force_terminal=False))
    return capsys.readouterr()


def test_no_malignant_to_normal_column_without_those_classes(capsys):
    assert "malig.->normal" not in _printed(_results(None), capsys)[0]
    out, _ = _printed(_results({"clean": 1, "fgsm": 2, "worst_case": 3}), capsys)
    assert "malig.->normal" in out


def test_leakage_warning_printed_as_one_line(capsys):
    _, err = _printed(_results(None, leak="the sentinel scores 99%: leakage suspected"), capsys)
    lines = [line for line in err.splitlines() if line.startswith("fortify: warning:")]
    assert lines == ["fortify: warning: the sentinel scores 99%: leakage suspected"]
    assert "fortify: warning" not in _printed(_results(None), capsys)[1]
