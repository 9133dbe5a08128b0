"""Paired comparison of two finished runs' models on the same test images: two defences cross-validated on
the same folds (`fortify reproduce --folds 5` twice, the same data, seed and split settings), or two single
runs on the same split.

    .venv/bin/python benchmarks/compare_runs.py runs/cv5:adversarial runs/cv5-best:adversarial

Each side is RUN_DIR[:MODEL] (MODEL: normal | adversarial, default adversarial). For a cross-validation,
every fold's `MODEL/eval/results.json` is joined end to end, so every unique image is scored once by each
side; the two must have tested exactly the same images (same folds), or the comparison refuses. Printed per
metric (clean, each attack, worst case): both accuracies, the difference (b - a) with Newcombe's paired 95%
interval and the exact McNemar p-value, over all images and then per class (from the split manifests).
`--json FILE` writes the numbers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from fortify.evaluation.compare import compare_results
from fortify.fileio import read_json, write_json


def _side(spec: str) -> tuple[Path, str]:
    run, sep, model = spec.rpartition(":")
    if not sep or model not in ("normal", "adversarial"):
        return Path(spec), "adversarial"
    return Path(run), model


def _fold_dirs(run: Path) -> list[Path]:
    folds = sorted(run.glob("fold-*"), key=lambda p: int(p.name.split("-")[1]))
    return folds or [run]


def load_run(spec: str) -> tuple[dict[str, Any], dict[str, int], list[str]]:
    """(results-like dict whose per_sample joins every fold's, path -> label, class names) of one side."""
    run, model = _side(spec)
    parts, labels, classes = [], {}, []
    for fold in _fold_dirs(run):
        results_path = fold / model / "eval" / "results.json"
        if not results_path.is_file():
            raise SystemExit(f"compare_runs: {results_path} not found (is {run} a finished run?)")
        parts.append(read_json(results_path)["per_sample"])
        split = read_json(fold / "split.json")
        classes = list(split["dataset"]["classes"])
        labels |= {e["path"]: int(e["label"]) for e in split["splits"]["test"]}
    keys = [k for k in parts[0]["correct"] if all(k in ps["correct"] for ps in parts)]
    paths = [str(p) for ps in parts for p in ps["paths"]]
    correct = {k: [int(bool(v)) for ps in parts for v in ps["correct"][k]] for k in keys}
    return {"per_sample": {"paths": paths, "correct": correct}}, labels, classes


def _in_order(results: dict[str, Any], order: list[str]) -> dict[str, Any]:
    """The same per_sample records, reordered to `order` (folds may list their images differently)."""
    ps = results["per_sample"]
    index = {p: i for i, p in enumerate(ps["paths"])}
    return {
        "per_sample": {
            "paths": order,
            "correct": {k: [v[index[p]] for p in order] for k, v in ps["correct"].items()},
        }
    }


def compare_runs(a_spec: str, b_spec: str) -> dict[str, Any]:
    a, labels, classes = load_run(a_spec)
    b, _, _ = load_run(b_spec)
    paths_a, paths_b = a["per_sample"]["paths"], b["per_sample"]["paths"]
    if len(set(paths_a)) != len(paths_a) or set(paths_a) != set(paths_b):
        differ = len(set(paths_a) ^ set(paths_b))
        raise SystemExit(
            f"compare_runs: the two runs tested different images ({differ} differ); "
            "a paired comparison needs the same folds"
        )
    order = sorted(paths_a)
    a, b = _in_order(a, order), _in_order(b, order)
    out = {"a": a_spec, "b": b_spec, "all": compare_results(a, b, a_spec, b_spec), "per_class": {}}
    for c, name in enumerate(classes):
        subset = [p for p in order if labels.get(p) == c]
        if subset:
            out["per_class"][name] = compare_results(
                _in_order(a, subset), _in_order(b, subset), a_spec, b_spec
            )
    return out


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def print_table(title: str, comparison: dict[str, Any]) -> None:
    print(f"\n{title} (n = {comparison['n']})")
    print(f"{'metric':<12}{'a':>8}{'b':>8}{'b - a [95%]':>26}{'p':>10}")
    for key, m in comparison["metrics"].items():
        lo, hi = m["difference_ci"] or (None, None)
        diff = f"{100 * m['difference']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]" if lo is not None else "—"
        print(f"{key:<12}{_pct(m['a_accuracy']):>8}{_pct(m['b_accuracy']):>8}{diff:>26}{m['p_value']:>10.2g}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", help="RUN_DIR[:normal|adversarial] (the baseline)")
    parser.add_argument("b", help="RUN_DIR[:normal|adversarial] (the challenger)")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    args = parser.parse_args(argv)
    try:
        result = compare_runs(args.a, args.b)
    except (OSError, KeyError, TypeError, ValueError) as e:  # a run folder that is not a finished run
        why = f"{type(e).__name__}: {e}"
        raise SystemExit(f"compare_runs: cannot read a run's results or split ({why})") from None
    print(f"a = {args.a}\nb = {args.b}")
    print_table("all test images", result["all"])
    for name, comparison in result["per_class"].items():
        print_table(f"class {name}", comparison)
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
