"""The last stage of a cross-validated run: cv/summary.json and the cross-validation report.

It summarises the folds finished so far (both models evaluated and compared), so that K machines each
running one fold (`reproduce --folds K --fold i --resume` on one shared run directory) leave a summary
that the last of them completes; the summary names the folds still missing.
"""

from __future__ import annotations

from pathlib import Path

from fortify import __version__
from fortify.errors import DataError
from fortify.fileio import read_json, write_json
from fortify.pipeline.stage import At, RunPlan, Stage, sha_or_missing

FOLD_FILES = ("split.json", "comparison.json", "normal/eval/results.json", "adversarial/eval/results.json")


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


def finished_folds(at: At) -> list[int]:
    return [i for i, d in enumerate(_fold_dirs(at)) if all((d / n).is_file() for n in FOLD_FILES)]


def _cv_inputs(at: At) -> dict[str, str]:
    files = [d / n for d in _fold_dirs(at) for n in FOLD_FILES]
    return {str(f.relative_to(at.run.out)): sha_or_missing(f) for f in files}


def _run_cv(at: At) -> None:
    from fortify.data import load_manifest
    from fortify.evaluation.cv import summarize_folds
    from fortify.report import build_cv_report
    from fortify.report.explorer import build_explorer

    per_fold = []
    done = finished_folds(at)
    for i, d in enumerate(_fold_dirs(at)):
        if i not in done:
            continue
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
    try:
        summary = summarize_folds(per_fold)
    except ValueError as e:  # a patient tested in two folds: the folds leak, no summary can be honest
        raise DataError(f"cross-validation summary: {e}") from e
    missing = [i for i in range(at.folds) if i not in done]
    summary["missing_folds"] = missing
    if missing:
        summary.setdefault("warnings", []).append(
            f"folds {', '.join(map(str, missing))} of {at.folds} not finished yet: this summary covers "
            f"folds {', '.join(map(str, done))} only"
        )
    write_json(out / "cv" / "summary.json", summary)
    build_cv_report(out / "cv")
    build_explorer(out, missing_ok=True)  # RUN_DIR/explorer/: every fold's test images, each by its own fold
    if missing and at.run.progress:
        from rich.console import Console

        Console(stderr=True).print(f"cv: folds {missing} not finished yet; the summary covers folds {done}")
