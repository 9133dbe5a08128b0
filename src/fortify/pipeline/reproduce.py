"""`reproduce`: the whole study in one resumable run directory.

audit → split → normal → normal/eval → adversarial → adversarial/eval → transfer → compare → report.
With `folds=K` the split becomes K scan-grouped folds, the study runs once per fold in RUN_DIR/fold-<i>/,
and a last stage writes RUN_DIR/cv/summary.json and the cross-validation report.
Each stage writes its outputs (atomically), then a record holding its fingerprint. On `--resume`, a stage
whose record matches and whose outputs exist is skipped; an interrupted training stage continues from its
`last.*` checkpoint. Everything the user can get wrong is checked before the first file is written.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from fortify import __version__
from fortify.attacks import AttackSpec
from fortify.config_files import configs_dir
from fortify.errors import ConfigError
from fortify.evaluation.settings import EvalSettings
from fortify.fileio import read_json, sha256_file, write_json, write_yaml
from fortify.pipeline.estimate import (
    Budget,
    MachineSpeed,
    StageEstimate,
    eval_seconds,
    fmt_minutes,
    measure_machine,
    train_seconds,
)
from fortify.pipeline.fingerprint import data_identity, fingerprint, is_up_to_date, write_record
from fortify.pipeline.profiles import Profile, check_defense, load_profile
from fortify.pipeline.rundir import check_data, prepare_out, run_config
from fortify.runtime import Runtime

if TYPE_CHECKING:
    from fortify.training import TrainConfig


def _keep_outputs(at: At) -> None:
    return None


def _one_second(at: At, speed: MachineSpeed) -> float:
    return 1.0


@dataclass
class Stage:
    """One resumable step of the run: what it writes, what it depends on, and the top-level functions
    that do its work, each called with `at` (where it works)."""

    name: str  # "normal/eval"
    title: str
    record: Path
    outputs: list[Path]
    config: dict[str, Any]
    at: At
    action: Callable[[At], None]
    find_inputs: Callable[
        [At], dict[str, str]
    ]  # evaluated when the stage is reached (earlier stages made them)
    remove: Callable[[At], None] = _keep_outputs  # remove stale outputs before a rerun
    kind: str = "other"  # "train" | "eval" | "other": stages of one kind share the estimate's correction
    # each config key's default, so a record from before a key existed still matches (fingerprint.py)
    defaults: dict[str, Any] = field(default_factory=dict)
    # inputs this stage once had and has dropped, so records from then still match (fingerprint.py)
    retired_inputs: tuple[str, ...] = ()
    retired_config: tuple[str, ...] = ()  # likewise for config keys
    estimate: Callable[[At, MachineSpeed], float] = _one_second  # predicted seconds on a measured machine

    def inputs(self) -> dict[str, str]:
        return self.find_inputs(self.at)

    def run(self) -> None:
        self.action(self.at)

    def clean(self) -> None:
        self.remove(self.at)

    def cost(self, speed: MachineSpeed) -> float:
        return self.estimate(self.at, speed)


def train_config(
    profile: Profile, stage: str, mode: str, data: str, out: Path, device: str, precision: str
) -> TrainConfig:
    """The TrainConfig of one model of the study (`stage` normal | adversarial) in study root `out`:
    the profile's train section, then its stage section (benchmarks/recipes.py builds runs the same way)."""
    from fortify.training import TrainConfig

    base = {
        "data": data,
        "split": str(out / "split.json"),
        "model": profile.model,
        "mode": mode,
        "eps": profile.eps,
        "image_size": profile.image_size,
        "seed": profile.seed,
        "out": str(out / stage),
        "device": device,
        "precision": precision,
        "pretrained": profile.pretrained,
        "weights": profile.weights,
        "limit_per_class": profile.limit_per_class,
    }
    values = {**base, **profile.train, **getattr(profile, stage)}
    if values.get("init") == "normal":
        # Adversarial fine-tuning of the normal model (the study trains on top of it too): start from
        # the normal stage's best checkpoint instead of ImageNet/random weights.
        values.update(init=str(out / "normal" / "best.safetensors"), pretrained=False, weights=None)
    return TrainConfig.from_dict(values).validate()


def attack_specs(profile: Profile) -> list[AttackSpec]:
    """The evaluation attacks: the profile's explicit list, or evaluation's default set (FGSM, PGD,
    budgeted CW, strong) in the profile's threat model with the profile's step budgets."""
    from fortify.evaluation import default_attack_specs

    ev = profile.evaluate
    if ev.attacks:
        return list(ev.attacks)
    return default_attack_specs(ev.threat_model, ev, image_size=profile.image_size)


def _sha(path: Path) -> str:
    return sha256_file(path) if path.is_file() else "missing"


def _rmtree(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)


def _print_stage(console, index: int, total: int, stage: Stage, status: str) -> None:
    console.print(f"[bold][{index}/{total}][/bold] {stage.title}: {status}")


@dataclass
class _Run:
    """Everything the stage builders share: the resolved settings of one `reproduce` call."""

    prof: Profile
    data: str
    defense: str
    device: str
    precision: str
    runtime: Runtime
    out: Path
    progress: bool
    specs: list[AttackSpec]
    transfer_attack: AttackSpec
    data_id: dict[str, str]
    sizes: tuple[int, int, int] = (0, 0, 0)  # expected train / val / test images (for the time budget)
    extras: dict[str, Any] = field(default_factory=dict)  # extra stage name -> its resolved settings
    # set by _run_stages while a training stage runs: (epoch, seconds, epochs) after each epoch
    on_epoch: Callable[[int, float, int], None] | None = None

    def data_inputs(self) -> dict[str, str]:
        if "data" not in self.data_id:
            self.data_id["data"] = data_identity(self.data)
        return dict(self.data_id)

    def eval_settings(self) -> EvalSettings:
        """What each model's evaluation runs: the profile's settings with the attacks resolved."""
        return replace(self.prof.evaluate, attacks=self.specs)

    def eval_record(self) -> dict[str, Any]:
        """The evaluation stages' recorded config (their fingerprint hashes it): attacks as text."""
        ev = self.prof.evaluate
        return {
            "attacks": [str(s) for s in self.specs],
            "eps": ev.eps,
            "eps_curve": list(ev.eps_curve),
            "curve_attacks": [str(t) for t in ev.curve_attacks],
            "batch_size": ev.batch_size,
            "limit": ev.limit,
            "examples_per_class": ev.examples_per_class,
            "seed": ev.seed,
            "sanity_steps_factor": ev.sanity_steps_factor,
            "sanity_restarts": ev.sanity_restarts,
            "score_precision": ev.score_precision,
            "fold_bn": ev.fold_bn,
            "curve_cumulative": ev.curve_cumulative,
        }

    def transfer_settings(self) -> EvalSettings:
        return replace(self.prof.evaluate, transfer_attack=self.transfer_attack)

    def transfer_record(self) -> dict[str, Any]:
        """The transfer stage's recorded config (also written into transfer.json)."""
        ev = self.prof.evaluate
        return {
            "attack": str(self.transfer_attack),
            "batch_size": ev.batch_size,
            "limit": ev.limit,
            "seed": ev.seed,
        }


@dataclass(frozen=True)
class At:
    """Where a stage works: the run, its study root (RUN_DIR, or RUN_DIR/fold-<i> with --folds) and, for
    per-model and extra stages, the model or extra it concerns."""

    run: _Run
    root: Path
    name: str = ""  # "normal" | "adversarial" | an extra's name
    train_cfg: TrainConfig | None = None  # training stages: the resolved, validated config
    folds: int = 0  # the folds and cv stages

    @property
    def split(self) -> Path:
        return self.root / "split.json"


def _split_kwargs(prof: Profile) -> dict[str, Any]:
    return {
        "seed": prof.seed,
        "image_size": prof.image_size,
        "grouping": prof.grouping,
        "window": prof.window,
    }


def _data_stages(run: _Run, folds: int | None) -> list[Stage]:
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
                {**split_cfg, "folds": folds, "val_fraction": _val_fraction(prof)},
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
        run.data, at.folds, val_fraction=_val_fraction(prof), progress=run.progress, **_split_kwargs(prof)
    )
    for i, m in enumerate(manifests):
        save_manifest(m, run.out / f"fold-{i}" / "split.json")


def _val_fraction(prof: Profile) -> float:
    """A fold's validation share of its non-test images: the profile's val / (train + val)."""
    train, val, _ = prof.fractions
    return round(val / (train + val), 6)


def _study_stages(run: _Run, root: Path, prefix: str = "") -> list[Stage]:
    """The study on the split at root/split.json: train, evaluate, transfer, compare, report."""
    prof = run.prof
    modes = {"normal": "standard", "adversarial": run.defense}
    # Built up front: every training config is validated before the run directory is touched.
    train_cfgs = {
        name: train_config(prof, name, mode, run.data, root, run.device, run.precision)
        for name, mode in modes.items()
    }
    here = At(run, root)
    stages: list[Stage] = []
    for name, title in (
        ("normal", "normal training"),
        ("adversarial", f"adversarial training ({run.defense})"),
    ):
        cfg = train_cfgs[name]
        stages.append(
            Stage(
                prefix + name,
                title,
                root / name / "stage.json",
                [root / name / "best.safetensors", root / name / "best.json"],
                {k: v for k, v in cfg.to_dict().items() if k not in _TRAIN_LOCATIONS},
                At(run, root, name, cfg),
                _run_train,
                _train_inputs,
                remove=_remove_model_dir,
                kind="train",
                estimate=_train_cost,
                defaults=_train_defaults(),
                # what older records also hashed: the data folder's file times (see _train_inputs) and
                # the split's and init checkpoint's paths (moving the run directory changed them)
                retired_inputs=("data",),
                retired_config=("split", "init"),
            )
        )
        stages.append(
            Stage(
                f"{prefix}{name}/eval",
                f"evaluate the {name} model",
                root / name / "eval" / "stage.json",
                [root / name / "eval" / "results.json"],
                run.eval_record(),
                At(run, root, name),
                _run_eval,
                _checkpoint_inputs,
                remove=_remove_eval_dir,
                kind="eval",
                estimate=_eval_cost,
            )
        )
    stages += [
        Stage(
            prefix + "transfer",
            "transfer between the two models",
            root / "transfer.stage.json",
            [root / "transfer.json"],
            run.transfer_record(),
            here,
            _run_transfer,
            _both_checkpoints,
            estimate=_transfer_cost,
        ),
        Stage(
            prefix + "compare",
            "paired comparison (McNemar)",
            root / "comparison.stage.json",
            [root / "comparison.json"],
            {"method": "exact McNemar, Newcombe paired interval"},
            here,
            _run_compare,
            _both_results,
        ),
        *[_extra_stage(At(run, root, name), prefix) for name in run.extras],
        Stage(
            prefix + "report",
            "build the report",
            root / "report" / "stage.json",
            [root / "report" / "report.md", root / "report" / "report.html"],
            {"fortify_version": __version__},
            here,
            _run_report,
            _report_inputs,
        ),
    ]
    return stages


def _checkpoint(at: At, name: str) -> dict[str, str]:
    return {f"{name}/best.safetensors": _sha(at.root / name / "best.safetensors"), "split": _sha(at.split)}


def _checkpoint_inputs(at: At) -> dict[str, str]:
    return _checkpoint(at, at.name)


def _both_checkpoints(at: At) -> dict[str, str]:
    return {**_checkpoint(at, "normal"), **_checkpoint(at, "adversarial")}


def _remove_model_dir(at: At) -> None:
    _rmtree(at.root / at.name)


def _remove_eval_dir(at: At) -> None:
    _rmtree(at.root / at.name / "eval")


def _train_inputs(at: At) -> dict[str, str]:
    init = at.train_cfg.init
    # Not the dataset folder's identity (file times): the split manifest pins every file's sha256 and
    # training refuses data that differs from it, so a copy of the same data keeps finished models.
    return {
        "split": _sha(at.split),
        # fine-tuning from the normal model: a new normal model makes this stage stale
        **({"init": _sha(Path(init))} if init else {}),
    }


def _run_train(at: At) -> None:
    from fortify.training import train

    cfg, report = at.train_cfg, at.run.on_epoch
    on_epoch = None if report is None else (lambda epoch, seconds: report(epoch, seconds, cfg.epochs))
    train(cfg, resume=True, progress=at.run.progress, on_epoch=on_epoch)  # resume=True continues from last.*


def _train_cost(at: At, speed: MachineSpeed) -> float:
    n_train, n_val, _ = at.run.sizes
    return train_seconds(at.train_cfg, n_train, n_val, speed)


def _eval_images(run: _Run) -> int:
    n_test, limit = run.sizes[2], run.prof.evaluate.limit
    return min(n_test, limit) if limit else n_test


def _run_eval(at: At) -> None:
    from fortify.evaluation import evaluate_checkpoint

    run = at.run
    evaluate_checkpoint(
        at.root / at.name / "best.safetensors",
        data=run.data,
        split=at.split,
        settings=run.eval_settings(),
        out_dir=at.root / at.name / "eval",
        runtime=run.runtime,
        progress=run.progress,
    )


def _eval_cost(at: At, speed: MachineSpeed) -> float:
    ev = at.run.prof.evaluate
    curve = [(t, float(e)) for t in ev.curve_attacks for e in ev.eps_curve]
    n_eval = _eval_images(at.run)
    return eval_seconds(
        at.run.specs, curve, n_eval, ev.sanity_steps_factor, ev.sanity_restarts, speed, ev.curve_cumulative
    )


def _run_transfer(at: At) -> None:
    from fortify.evaluation import evaluate_transfer

    run, root = at.run, at.root
    pairs = [
        evaluate_transfer(
            root / src / "best.safetensors",
            root / dst / "best.safetensors",
            data=run.data,
            split=at.split,
            runtime=run.runtime,
            progress=run.progress,
            settings=run.transfer_settings(),
            source_name=src,
            target_name=dst,
        )
        for src, dst in (("normal", "adversarial"), ("adversarial", "normal"))
    ]
    write_json(root / "transfer.json", {"pairs": pairs, "config": run.transfer_record()})


def _transfer_cost(at: At, speed: MachineSpeed) -> float:
    from fortify.pipeline.estimate import attack_passes

    n_eval = _eval_images(at.run)
    grads, forwards = attack_passes(at.run.transfer_attack, n_eval)
    return 2 * (grads * speed.gradient + (forwards + 2 * n_eval) * speed.forward)


def _both_results(at: At) -> dict[str, str]:
    return {
        f"{n}/eval/results.json": _sha(at.root / n / "eval" / "results.json")
        for n in ("normal", "adversarial")
    }


def _run_compare(at: At) -> None:
    from fortify.evaluation.compare import compare_results

    a, b = (read_json(at.root / n / "eval" / "results.json") for n in ("normal", "adversarial"))
    write_json(at.root / "comparison.json", compare_results(a, b, "normal", "adversarial"))


def _report_inputs(at: At) -> dict[str, str]:
    out, root = at.run.out, at.root
    files = [
        out / "config.yaml",
        out / "audit.json",
        at.split,
        root / "transfer.json",
        root / "comparison.json",
        configs_dir() / "study_table1.yaml",
    ]
    files += [root / name / f"{name}.json" for name in at.run.extras]
    for name in ("normal", "adversarial"):
        files += [
            root / name / "metrics.jsonl",
            root / name / "config.yaml",
            root / name / "eval" / "results.json",
            root / name / "eval" / "examples.safetensors",
        ]
    return {str(f.relative_to(out) if f.is_relative_to(out) else f.name): _sha(f) for f in files}


def _run_report(at: At) -> None:
    from fortify.report import build_report

    build_report(at.root)


def _extra_stage(at: At, prefix: str) -> Stage:
    """One stage beyond the study (fortify.pipeline.extras), on this root's two models and split."""
    from fortify.pipeline.extras import EXTRAS

    name = at.name
    return Stage(
        prefix + name,
        EXTRAS[name].title,
        at.root / name / "stage.json",
        [at.root / name / f"{name}.json"],
        at.run.extras[name].to_dict(),
        at,
        _run_extra,
        _both_checkpoints,
        # a finished extra whose inputs changed starts over; an interrupted one keeps its partial files
        remove=_remove_model_dir,
        kind="extra",
        estimate=_not_estimated,  # the time is measured and printed when it finishes
    )


def _run_extra(at: At) -> None:
    from fortify.pipeline.extras import run_extra

    run = at.run
    run_extra(
        at.name, run.extras[at.name], at.root, data=run.data, runtime=run.runtime, progress=run.progress
    )


def _not_estimated(at: At, speed: MachineSpeed) -> float:
    return 0.0


def _cv_stage(run: _Run, folds: int) -> Stage:
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
    return {str(f.relative_to(at.run.out)): _sha(f) for f in files}


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


def _expected_sizes(data: str, prof: Profile, folds: int | None) -> tuple[int, int, int]:
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
        train_f, val_f = (1 - test_f) * (1 - _val_fraction(prof)), (1 - test_f) * _val_fraction(prof)
    k = prof.limit_per_class

    def share(f: float) -> int:
        return sum(min(round(c * f), k) if k else round(c * f) for c in counts)

    return share(train_f), share(val_f), share(test_f)


def _measure(run: _Run, console) -> MachineSpeed:
    """Time the profile's model on this machine without touching the run's random streams."""
    from fortify.models import build_model

    with torch.random.fork_rng(devices=[]):
        model = build_model(run.prof.model, 3, in_channels=1)
        speed = measure_machine(
            model,
            run.prof.image_size,
            1,
            run.runtime,
            train_batch=int({**run.prof.train, **run.prof.normal}.get("batch_size", 32)),
            eval_batch=run.prof.evaluate.batch_size,
        )
    console.print(
        f"this machine ({speed.device}, {speed.precision}), per image: training step "
        f"{1000 * speed.train_step:.1f} ms, attack step {1000 * speed.gradient:.1f} ms, forward "
        f"{1000 * speed.forward:.1f} ms (measured in {speed.seconds:.1f} s)"
    )
    return speed


def _print_budget(console, budget: Budget, stages: list[Stage], first: bool) -> None:
    if first:
        for stage, est in zip(stages, budget.stages, strict=True):
            if est.measured is None and est.seconds >= 1:
                console.print(f"  estimate {stage.title} ({stage.name}): {fmt_minutes(est.seconds)}")
        extra = [s.name for s in stages if s.kind == "extra"]
        console.print(
            f"estimated time for the whole run: {fmt_minutes(budget.total())} "
            "(updated as stages finish; a first estimate can be off by 2x)"
            + (f", not counting {', '.join(extra)}" if extra else "")
        )
    else:
        console.print(
            f"  remaining about {fmt_minutes(budget.remaining())}; whole run about "
            f"{fmt_minutes(budget.total())} (first estimate {fmt_minutes(budget.first_total)})"
        )


def reproduce(
    data: str | Path,
    out: str | Path,
    *,
    profile: str = "quick",
    defense: str | None = None,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    overrides: dict[str, Any] | None = None,
    device: str = "auto",
    precision: str = "auto",
    folds: int | None = None,
    on_stage: Callable[[str, str], None] | None = None,
) -> Path:
    """Run (or resume) the whole study into `out`; return the run directory.

    `defense` is the adversarial model's recipe (None: the profile's; quick's is the study's `mixed`).
    `folds=K` runs scan-grouped K-fold cross-validation instead of one train/val/test split.
    `on_stage(name, status)` is called with status "running", "done" or "skipped (up to date)" per stage
    (the CLI shows the same through the progress display)."""
    run, stages, cfg = _plan(data, out, profile, defense, progress, overrides, device, precision, folds)
    prepare_out(run.out, cfg, resume=resume, force=force)
    run.out.mkdir(parents=True, exist_ok=True)
    write_yaml(run.out / "config.yaml", cfg)
    _run_stages(run, stages, on_stage)
    return run.out


def _plan(
    data: str | Path,
    out: str | Path,
    profile: str,
    defense: str | None,
    progress: bool,
    overrides: dict[str, Any] | None,
    device: str,
    precision: str,
    folds: int | None,
) -> tuple[_Run, list[Stage], dict[str, Any]]:
    """Validate everything before anything is written: the run's settings, its stages and config.yaml."""
    if folds is not None and (isinstance(folds, bool) or not isinstance(folds, int) or folds < 2):
        raise ConfigError(f"--folds must be a whole number >= 2, got {folds!r}")
    prof = load_profile(profile, overrides)
    defense = prof.defense if defense is None else check_defense(defense)
    if folds is not None and prof.grouping == "given":
        raise ConfigError("--folds re-splits the data, so it cannot keep the given train/val/test folders")
    data = check_data(data)
    runtime = Runtime.resolve(device, precision)
    out = Path(out).expanduser().resolve()
    cfg = run_config(prof, data, defense, device, precision, runtime, overrides)
    cfg["folds"] = folds
    specs = attack_specs(prof)
    ev = prof.evaluate
    pgd_spec = next((s for s in specs if s.name == "pgd"), None)
    transfer_attack = (
        ev.transfer_attack or pgd_spec or AttackSpec.build("pgd", eps=ev.eps, steps=ev.pgd_steps)
    )
    from fortify.pipeline.extras import parse_extras, resolve_settings

    extras = {name: resolve_settings(name, getattr(prof, name)) for name in parse_extras(prof.extras)}
    run = _Run(
        prof,
        data,
        defense,
        device,
        precision,
        runtime,
        out,
        progress,
        specs,
        transfer_attack,
        {},
        _expected_sizes(data, prof, folds),
        extras,
    )
    roots = [out] if folds is None else [out / f"fold-{i}" for i in range(folds)]
    stages = _data_stages(run, folds)
    for i, root in enumerate(roots):  # building the stages validates every training config
        stages += _study_stages(run, root, "" if folds is None else f"fold-{i}/")
    if folds is not None:
        stages.append(_cv_stage(run, folds))
    # the resolved attack specs, so config.yaml alone says exactly what was run
    cfg["resolved"] = {"attacks": [str(s) for s in specs], "transfer_attack": str(transfer_attack)}
    return run, stages, cfg


# Where a training stage's files are, not what it computes: the split's and the init checkpoint's
# contents are its inputs (hashed), so a run directory that moved, or a dataset copied again, still resumes.
_TRAIN_LOCATIONS = ("out", "device", "data", "cache_dir", "split", "init")


def _train_defaults() -> dict[str, Any]:
    from dataclasses import MISSING, fields

    from fortify.training import TrainConfig

    return {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}


def _run_stages(run: _Run, stages: list[Stage], on_stage: Callable[[str, str], None] | None) -> None:
    """Each stage in order: skipped when up to date, else run and recorded; the time budget is measured at
    the first stage with work to do (a finished run resumed costs no calibration) and updated after each."""
    from rich.console import Console

    console = Console(stderr=True, quiet=not run.progress, soft_wrap=True)
    notify = on_stage or _ignore
    budget: Budget | None = None
    skipped: list[str] = []
    for i, stage in enumerate(stages, 1):
        inputs = stage.inputs()
        fp = fingerprint(stage.name, stage.config, inputs)
        if is_up_to_date(
            stage.record,
            stage.name,
            stage.config,
            inputs,
            stage.outputs,
            defaults=stage.defaults,
            retired_inputs=stage.retired_inputs,
            retired_config=stage.retired_config,
        ):
            _print_stage(console, i, len(stages), stage, "skipped (up to date)")
            skipped.append(stage.name)
            if budget is not None:
                budget.skipped(stage.name)
            notify(stage.name, "skipped (up to date)")
            continue
        if budget is None:
            budget = _first_budget(run, stages, skipped, console)
        if stage.record.is_file():  # finished earlier for other inputs: its outputs are stale
            stage.clean()
        _print_stage(console, i, len(stages), stage, "running")
        notify(stage.name, "running")
        started, cpu_started = time.perf_counter(), time.process_time()
        run.on_epoch = partial(_first_epoch_estimate, console, budget, stage.name)
        stage.run()
        run.on_epoch = None
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        write_record(stage.record, stage.name, fp, stage.config, inputs, seconds, cpu)
        _print_stage(console, i, len(stages), stage, f"done in {seconds:.1f} s (CPU {cpu:.1f} s)")
        budget.finished(stage.name, seconds)
        if i < len(stages):
            _print_budget(console, budget, stages, first=False)
        write_json(run.out / "estimate.json", budget.to_dict())
        notify(stage.name, "done")


def _first_epoch_estimate(
    console, budget: Budget, name: str, epoch: int, seconds: float, epochs: int
) -> None:
    """After the first training epoch of the run, the whole-run estimate with training rescaled by it."""
    if epoch == 1 and budget.epoch_measured(name, seconds, epochs):
        console.print(
            f"  first epoch took {seconds:.0f} s: training about {fmt_minutes(seconds * epochs)} for this "
            f"model; whole run about {fmt_minutes(budget.total())} (first estimate "
            f"{fmt_minutes(budget.first_total)})"
        )


def _ignore(name: str, status: str) -> None:
    return None


def _first_budget(run: _Run, stages: list[Stage], skipped: list[str], console) -> Budget:
    """Measure this machine, predict every stage (those already skipped cost nothing), print, save."""
    speed = _measure(run, console)
    budget = Budget(speed, [StageEstimate(s.name, s.kind, s.cost(speed)) for s in stages])
    for name in skipped:
        budget.skipped(name)
    _print_budget(console, budget, stages, first=True)
    write_json(run.out / "estimate.json", budget.to_dict())
    return budget
