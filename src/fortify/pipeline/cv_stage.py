"""The last stage of a cross-validated run: cv/summary.json and the cross-validation report."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fortify import __version__
from fortify.fileio import read_json, write_json
from fortify.pipeline.stage import At, RunPlan, Stage, sha_or_missing

if TYPE_CHECKING:
    pass


def cv_stage(run: RunPlan, folds: int) -> Stage:
    out = run.out
    return Stage(
        "cv",
        f"summarise {folds} folds",
        out / "cv" / "stage.json",
        [out / "cv" / "summary.json", out / "cv" / "report.md", out / "cv" / "report.html"],
        {"folds": folds, "fortify_version": __version__},
        At(run, out, folds=folds),
        _run_cv,
        _cv_inputs,
    )


def _fold_dirs(at: At) -> list[Path]:
    return [at.run.out / f"fold-{i}" for i in range(at.folds)]


def _cv_inputs(at: At) -> dict[str, str]:
    names = ("split.json", "comparison.json", "normal/eval/results.json", "adversarial/eval/results.json")
    files = [d / n for d in _fold_dirs(at) for n in names]
    return {str(f.relative_to(at.run.out)): sha_or_missing(f) for f in files}


def _run_cv(at: At) -> None:
    from fortify.data import load_manifest
    from fortify.evaluation.cv import summarize_folds
    from fortify.report import build_cv_report

    per_fold = []
    for i, d in enumerate(_fold_dirs(at)):
        manifest = load_manifest(d / "split.json")
        per_fold.append(
            {
                "fold": i,
                "normal": read_json(d / "normal" / "eval" / "results.json"),
                "adversarial": read_json(d / "adversarial" / "eval" / "results.json"),
                "sentinel": manifest.sentinel or None,
                "comparison": read_json(d / "comparison.json"),
                "labels": {e["path"]: int(e["label"]) for e in manifest.splits["test"]},
            }
        )
    out = at.run.out
    write_json(out / "cv" / "summary.json", summarize_folds(per_fold))
    build_cv_report(out / "cv")
