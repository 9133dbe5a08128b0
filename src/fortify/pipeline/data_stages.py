"""The data stages of a run: audit, then one split or K scan-grouped folds."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fortify.fileio import write_json
from fortify.pipeline.profiles import Profile
from fortify.pipeline.stage import At, RunPlan, Stage

if TYPE_CHECKING:
    pass


def _split_kwargs(prof: Profile) -> dict[str, Any]:
    return {
        "seed": prof.seed,
        "image_size": prof.image_size,
        "grouping": prof.grouping,
        "window": prof.window,
    }


def data_stages(run: RunPlan, folds: int | None) -> list[Stage]:
    """audit, then the split (one manifest) or the folds (one manifest per fold directory)."""
    out, prof = run.out, run.prof
    at = At(run, out, folds=folds or 0)
    stages = [
        Stage(
            "audit",
            "audit the data",
            out / "audit.stage.json",
            [out / "audit.json"],
            {"data": run.data, "image_size": prof.image_size, "window": prof.window},
            at,
            _run_audit,
            _data_inputs,
        ),
    ]
    split_cfg = {"data": run.data, "fractions": prof.fractions, **_split_kwargs(prof)}
    if folds is None:
        stages.append(
            Stage(
                "split",
                "split train/val/test",
                out / "split.stage.json",
                [out / "split.json"],
                split_cfg,
                at,
                _run_split,
                _data_inputs,
            )
        )
    else:
        stages.append(
            Stage(
                "folds",
                f"split into {folds} scan-grouped folds",
                out / "folds.stage.json",
                [out / f"fold-{i}" / "split.json" for i in range(folds)],
                {**split_cfg, "folds": folds, "val_fraction": val_fraction(prof)},
                at,
                _run_folds,
                _data_inputs,
            )
        )
    return stages


def _data_inputs(at: At) -> dict[str, str]:
    return at.run.data_inputs()


def _run_audit(at: At) -> None:
    from fortify.data import audit_dataset

    run = at.run
    report = audit_dataset(
        run.data, image_size=run.prof.image_size, progress=run.progress, window=run.prof.window
    )
    write_json(run.out / "audit.json", report)


def _run_split(at: At) -> None:
    from fortify.data import make_split, save_manifest

    run, prof = at.run, at.run.prof
    m = make_split(run.data, fractions=tuple(prof.fractions), progress=run.progress, **_split_kwargs(prof))
    save_manifest(m, run.out / "split.json")


def _run_folds(at: At) -> None:
    from fortify.data import make_folds, save_manifest

    run, prof = at.run, at.run.prof
    manifests = make_folds(
        run.data, at.folds, val_fraction=val_fraction(prof), progress=run.progress, **_split_kwargs(prof)
    )
    for i, m in enumerate(manifests):
        save_manifest(m, run.out / f"fold-{i}" / "split.json")


def val_fraction(prof: Profile) -> float:
    """A fold's validation share of its non-test images: the profile's val / (train + val)."""
    train, val, _ = prof.fractions
    return round(val / (train + val), 6)


def expected_sizes(data: str, prof: Profile, folds: int | None) -> tuple[int, int, int]:
    """Train / val / test images the split will make (close enough for a time estimate)."""
    from fortify.data.discover import discover
    from fortify.data.phantom import PHANTOM_CLASSES, parse_phantom_spec

    per_phantom = parse_phantom_spec(data)
    if per_phantom is not None:
        counts = [per_phantom] * len(PHANTOM_CLASSES)
    else:
        found = discover(data)
        counts = [sum(1 for _, label in found.files if label == c) for c in range(len(found.classes))]
    train_f, val_f, test_f = prof.fractions
    if folds is not None:
        test_f = 1 / folds
        train_f, val_f = (1 - test_f) * (1 - val_fraction(prof)), (1 - test_f) * val_fraction(prof)
    k = prof.limit_per_class

    def share(f: float) -> int:
        return sum(min(round(c * f), k) if k else round(c * f) for c in counts)

    return share(train_f), share(val_f), share(test_f)
