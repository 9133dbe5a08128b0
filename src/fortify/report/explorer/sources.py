"""Which evaluations an explorer shows: a `fortify evaluate` folder, a reproduce run (its normal and
adversarial model side by side), or a cross-validated run (every fold's test images, each with the
models of the fold that held it out)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from fortify.errors import ConfigError

MODELS = ("normal", "adversarial")
ADVERSARIAL_FILE = "adversarial.safetensors"
FOLD = re.compile(r"fold-(\d+)")


@dataclass(frozen=True)
class Source:
    """One evaluation: `folder` holds its results.json and adversarial.safetensors."""

    model: str  # "normal", "adversarial", or "model" for a lone evaluation
    folder: Path
    fold: int | None  # the cross-validation fold whose test images these are
    run_root: Path | None  # where explain/ and certify/ of this model's run live (None: a lone evaluation)


def _study(root: Path, fold: int | None) -> list[Source]:
    return [
        Source(name, root / name / "eval", fold, root)
        for name in MODELS
        if (root / name / "eval" / "results.json").is_file()
    ]


def find_sources(path: str | Path) -> tuple[str, list[Source]]:
    """("evaluate" | "reproduce" | "cv", the evaluations under `path`); ConfigError when there are none."""
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise ConfigError(f"not a folder: {path}")
    if (root / "results.json").is_file():
        return "evaluate", [Source("model", root, None, None)]
    folds = sorted(
        (int(m.group(1)), d) for d in root.iterdir() if d.is_dir() and (m := FOLD.fullmatch(d.name))
    )
    if folds:
        sources = [s for i, d in folds for s in _study(d, i)]
        if sources:
            return "cv", sources
    sources = _study(root, None)
    if sources:
        return "reproduce", sources
    raise ConfigError(
        f"{path} holds no evaluation (results.json, <model>/eval/results.json or fold-<i>/ of a run)"
    )


def usable(sources: list[Source]) -> tuple[list[Source], list[str]]:
    """The sources whose evaluation kept its per-image images, and a note for each that did not."""
    kept, notes = [], []
    for s in sources:
        if (s.folder / ADVERSARIAL_FILE).is_file():
            kept.append(s)
        else:
            notes.append(
                f"{s.folder} has no {ADVERSARIAL_FILE} (evaluated before fortify kept per-image "
                "adversarial images): evaluate it again to explore it"
            )
    return kept, notes
