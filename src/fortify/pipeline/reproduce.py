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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fortify import __version__
from fortify.errors import ConfigError
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
from fortify.pipeline.profiles import DEFENSES, Profile, load_profile
from fortify.pipeline.rundir import check_data, prepare_out, run_config
from fortify.report.study import configs_dir
from fortify.runtime import Runtime


@dataclass
class Stage:
    name: str  # "normal/eval"
    title: str
    record: Path
    outputs: list[Path]
    config: dict[str, Any]
    inputs: Callable[[], dict[str, str]]  # evaluated when the stage is reached (earlier stages made them)
    run: Callable[[], None]
    clean: Callable[[], None] = lambda: None  # remove stale outputs before a rerun
    kind: str = "other"  # "train" | "eval" | "other": stages of one kind share the estimate's correction
    cost: Callable[[MachineSpeed], float] = lambda speed: 1.0  # predicted seconds on a measured machine


def _train_config(profile: Profile, stage: str, mode: str, data: str, out: Path, device: str, precision: str):
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


def attack_specs(profile: Profile) -> list[str]:
    """The evaluation attacks: the profile's explicit list, or evaluation's default set (FGSM, PGD,
    budgeted CW, strong) at the profile's eps with the profile's step budgets."""
    from fortify.evaluation import default_attack_specs

    ev = profile.evaluate
    if ev.attacks:
        return list(ev.attacks)
    return default_attack_specs(profile.eps, image_size=profile.image_size, **ev.attack_budgets())


def _check_specs(specs: list[str], curve: list[str], transfer: str) -> None:
    from fortify.attacks import parse_spec
    from fortify.evaluation.specs import curve_specs

    for s in [*specs, transfer]:
        parse_spec(s)
    curve_specs(curve)


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
    specs: list[str]
    transfer_attack: str
    data_id: dict[str, str]
    sizes: tuple[int, int, int] = (0, 0, 0)  # expected train / val / test images (for the time budget)
    extras: dict[str, Any] = field(default_factory=dict)  # extra stage name -> its resolved settings

    def data_inputs(self) -> dict[str, str]:
        if "data" not in self.data_id:
            self.data_id["data"] = data_identity(self.data)
        return dict(self.data_id)

    def eval_kwargs(self) -> dict[str, Any]:
        ev = self.prof.evaluate
        return {
            "attacks": self.specs,
            "eps": self.prof.eps,
            "eps_curve": list(ev.eps_curve),
            "curve_attacks": list(ev.curve_attacks),
            "batch_size": ev.batch_size,
            "limit": ev.limit,
            "examples_per_class": ev.examples_per_class,
            "seed": self.prof.seed,
            "sanity_steps_factor": ev.sanity_steps_factor,
            "sanity_restarts": ev.sanity_restarts,
            "score_precision": ev.score_precision,
            "fold_bn": ev.fold_bn,
        }

    def transfer_kwargs(self) -> dict[str, Any]:
        ev = self.prof.evaluate
        return {
            "attack": self.transfer_attack,
            "batch_size": ev.batch_size,
            "limit": ev.limit,
            "seed": self.prof.seed,
        }


def _split_kwargs(prof: Profile) -> dict[str, Any]:
    return {"seed": prof.seed, "image_size": prof.image_size, "grouping": prof.grouping}


def _data_stages(run: _Run, folds: int | None) -> list[Stage]:
    """audit, then the split (one manifest) or the folds (one manifest per fold directory)."""
    out, prof = run.out, run.prof

    def run_audit() -> None:
        from fortify.data import audit_dataset

        write_json(
            out / "audit.json", audit_dataset(run.data, image_size=prof.image_size, progress=run.progress)
        )

    def run_split() -> None:
        from fortify.data import make_split, save_manifest

        m = make_split(
            run.data, fractions=tuple(prof.fractions), progress=run.progress, **_split_kwargs(prof)
        )
        save_manifest(m, out / "split.json")

    def run_folds() -> None:
        from fortify.data import make_folds, save_manifest

        manifests = make_folds(
            run.data, folds, val_fraction=_val_fraction(prof), progress=run.progress, **_split_kwargs(prof)
        )
        for i, m in enumerate(manifests):
            save_manifest(m, out / f"fold-{i}" / "split.json")

    stages = [
        Stage(
            "audit",
            "audit the data",
            out / "audit.stage.json",
            [out / "audit.json"],
            {"data": run.data, "image_size": prof.image_size},
            run.data_inputs,
            run_audit,
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
                run.data_inputs,
                run_split,
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
                run.data_inputs,
                run_folds,
            )
        )
    return stages


def _val_fraction(prof: Profile) -> float:
    """A fold's validation share of its non-test images: the profile's val / (train + val)."""
    train, val, _ = prof.fractions
    return round(val / (train + val), 6)


def _study_stages(run: _Run, root: Path, prefix: str = "") -> list[Stage]:
    """The study on the split at root/split.json: train, evaluate, transfer, compare, report."""
    prof, out = run.prof, run.out
    train_cfgs = {
        "normal": _train_config(prof, "normal", "standard", run.data, root, run.device, run.precision),
        "adversarial": _train_config(
            prof, "adversarial", run.defense, run.data, root, run.device, run.precision
        ),
    }
    split = root / "split.json"
    eval_kwargs, transfer_kwargs = run.eval_kwargs(), run.transfer_kwargs()

    def run_train(name: str) -> Callable[[], None]:
        def go() -> None:
            from fortify.training import train

            train(train_cfgs[name], resume=True, progress=run.progress)  # resume=True continues from last.*

        return go

    def run_eval(name: str) -> Callable[[], None]:
        def go() -> None:
            from fortify.evaluation import evaluate_checkpoint

            evaluate_checkpoint(
                root / name / "best.safetensors",
                data=run.data,
                split=split,
                out_dir=root / name / "eval",
                runtime=run.runtime,
                progress=run.progress,
                **eval_kwargs,
            )

        return go

    def run_transfer() -> None:
        from fortify.evaluation import evaluate_transfer

        pairs = [
            evaluate_transfer(
                root / src / "best.safetensors",
                root / dst / "best.safetensors",
                data=run.data,
                split=split,
                runtime=run.runtime,
                progress=run.progress,
                source_name=src,
                target_name=dst,
                **transfer_kwargs,
            )
            for src, dst in (("normal", "adversarial"), ("adversarial", "normal"))
        ]
        write_json(root / "transfer.json", {"pairs": pairs, "config": transfer_kwargs})

    def run_compare() -> None:
        from fortify.evaluation.compare import compare_results

        a, b = (read_json(root / n / "eval" / "results.json") for n in ("normal", "adversarial"))
        write_json(root / "comparison.json", compare_results(a, b, "normal", "adversarial"))

    def run_report() -> None:
        from fortify.report import build_report

        build_report(root)

    def results_of(*names: str) -> dict[str, str]:
        return {f"{n}/eval/results.json": _sha(root / n / "eval" / "results.json") for n in names}

    def report_inputs() -> dict[str, str]:
        files = [
            out / "config.yaml",
            out / "audit.json",
            split,
            root / "transfer.json",
            root / "comparison.json",
            configs_dir() / "study_table1.yaml",
        ]
        files += [root / name / f"{name}.json" for name in run.extras]
        for name in ("normal", "adversarial"):
            files += [
                root / name / "metrics.jsonl",
                root / name / "config.yaml",
                root / name / "eval" / "results.json",
                root / name / "eval" / "examples.safetensors",
            ]
        return {str(f.relative_to(out) if f.is_relative_to(out) else f.name): _sha(f) for f in files}

    def ckpt(name: str) -> dict[str, str]:
        return {f"{name}/best.safetensors": _sha(root / name / "best.safetensors"), "split": _sha(split)}

    def train_fp_config(name: str) -> dict[str, Any]:
        d = train_cfgs[name].to_dict()
        return {k: v for k, v in d.items() if k not in ("out", "device", "data", "cache_dir")}

    n_train, n_val, n_test = run.sizes
    ev = prof.evaluate
    n_eval = min(n_test, ev.limit) if ev.limit else n_test

    def eval_cost(speed: MachineSpeed) -> float:
        curve = [(t, float(e)) for t in ev.curve_attacks for e in ev.eps_curve]
        return eval_seconds(run.specs, curve, n_eval, ev.sanity_steps_factor, ev.sanity_restarts, speed)

    def transfer_cost(speed: MachineSpeed) -> float:
        from fortify.pipeline.estimate import attack_passes

        grads, forwards = attack_passes(run.transfer_attack, n_eval)
        return 2 * (grads * speed.gradient + (forwards + 2 * n_eval) * speed.forward)

    stages: list[Stage] = []
    for name, title in (
        ("normal", "normal training"),
        ("adversarial", f"adversarial training ({run.defense})"),
    ):
        stages.append(
            Stage(
                prefix + name,
                title,
                root / name / "stage.json",
                [root / name / "best.safetensors", root / name / "best.json"],
                train_fp_config(name),
                lambda n=name: {
                    "split": _sha(split),
                    **run.data_inputs(),
                    # fine-tuning from the normal model: a new normal model makes this stage stale
                    **({"init": _sha(Path(train_cfgs[n].init))} if train_cfgs[n].init else {}),
                },
                run_train(name),
                clean=lambda n=name: _rmtree(root / n),
                kind="train",
                cost=lambda speed, n=name: train_seconds(train_cfgs[n], n_train, n_val, speed),
            )
        )
        stages.append(
            Stage(
                f"{prefix}{name}/eval",
                f"evaluate the {name} model",
                root / name / "eval" / "stage.json",
                [root / name / "eval" / "results.json"],
                eval_kwargs,
                lambda n=name: ckpt(n),
                run_eval(name),
                clean=lambda n=name: _rmtree(root / n / "eval"),
                kind="eval",
                cost=eval_cost,
            )
        )
    stages += [
        Stage(
            prefix + "transfer",
            "transfer between the two models",
            root / "transfer.stage.json",
            [root / "transfer.json"],
            transfer_kwargs,
            lambda: {**ckpt("normal"), **ckpt("adversarial")},
            run_transfer,
            cost=transfer_cost,
        ),
        Stage(
            prefix + "compare",
            "paired comparison (McNemar)",
            root / "comparison.stage.json",
            [root / "comparison.json"],
            {"method": "exact McNemar, Newcombe paired interval"},
            lambda: results_of("normal", "adversarial"),
            run_compare,
        ),
        *[_extra_stage(run, root, prefix, name, ckpt) for name in run.extras],
        Stage(
            prefix + "report",
            "build the report",
            root / "report" / "stage.json",
            [root / "report" / "report.md", root / "report" / "report.html"],
            {"fortify_version": __version__},
            report_inputs,
            run_report,
        ),
    ]
    return stages


def _extra_stage(run: _Run, root: Path, prefix: str, name: str, ckpt: Callable[[str], dict]) -> Stage:
    """One stage beyond the study (fortify.pipeline.extras), on this root's two models and split."""
    from fortify.pipeline.extras import EXTRAS, run_extra

    settings = run.extras[name]

    def go() -> None:
        run_extra(name, settings, root, data=run.data, runtime=run.runtime, progress=run.progress)

    return Stage(
        prefix + name,
        EXTRAS[name].title,
        root / name / "stage.json",
        [root / name / f"{name}.json"],
        settings.to_dict(),
        lambda: {**ckpt("normal"), **ckpt("adversarial")},
        go,
        # a finished extra whose inputs changed starts over; an interrupted one keeps its partial files
        clean=lambda: _rmtree(root / name),
        kind="extra",
        cost=lambda speed: 0.0,  # not estimated: the time is measured and printed when it finishes
    )


def _cv_stage(run: _Run, folds: int) -> Stage:
    out = run.out
    fold_dirs = [out / f"fold-{i}" for i in range(folds)]

    def inputs() -> dict[str, str]:
        files = [
            d / n
            for d in fold_dirs
            for n in (
                "split.json",
                "comparison.json",
                "normal/eval/results.json",
                "adversarial/eval/results.json",
            )
        ]
        return {str(f.relative_to(out)): _sha(f) for f in files}

    def go() -> None:
        from fortify.data import load_manifest
        from fortify.evaluation.cv import summarize_folds
        from fortify.report import build_cv_report

        per_fold = [
            {
                "fold": i,
                "normal": read_json(d / "normal" / "eval" / "results.json"),
                "adversarial": read_json(d / "adversarial" / "eval" / "results.json"),
                "sentinel": load_manifest(d / "split.json").sentinel or None,
                "comparison": read_json(d / "comparison.json"),
            }
            for i, d in enumerate(fold_dirs)
        ]
        write_json(out / "cv" / "summary.json", summarize_folds(per_fold))
        build_cv_report(out / "cv")

    return Stage(
        "cv",
        f"summarise {folds} folds",
        out / "cv" / "stage.json",
        [out / "cv" / "summary.json", out / "cv" / "report.md", out / "cv" / "report.html"],
        {"folds": folds, "fortify_version": __version__},
        inputs,
        go,
    )


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
    defense: str = "mixed",
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

    `folds=K` runs scan-grouped K-fold cross-validation instead of one train/val/test split.
    `on_stage(name, status)` is called with status "running", "done" or "skipped (up to date)" per stage
    (the CLI shows the same through the progress display)."""
    # ---- validate everything before writing anything
    if defense not in DEFENSES:
        raise ConfigError(f"unknown defense {defense!r}; choose one of {', '.join(DEFENSES)}")
    if folds is not None and (isinstance(folds, bool) or not isinstance(folds, int) or folds < 2):
        raise ConfigError(f"--folds must be a whole number >= 2, got {folds!r}")
    prof = load_profile(profile, overrides)
    data = check_data(data)
    runtime = Runtime.resolve(device, precision)
    out = Path(out).expanduser().resolve()
    cfg = run_config(prof, data, defense, device, precision, runtime, overrides)
    cfg["folds"] = folds
    specs = attack_specs(prof)
    ev = prof.evaluate
    pgd_spec = next((s for s in specs if s.startswith("pgd")), f"pgd:eps={prof.eps!r},steps={ev.pgd_steps}")
    transfer_attack = ev.transfer_attack or pgd_spec
    _check_specs(specs, ev.curve_attacks, transfer_attack)
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
    cfg["resolved"] = {"attacks": specs, "transfer_attack": transfer_attack}
    prepare_out(out, cfg, resume=resume, force=force)

    out.mkdir(parents=True, exist_ok=True)
    write_yaml(out / "config.yaml", cfg)

    from rich.console import Console

    console = Console(stderr=True, quiet=not progress)
    budget: Budget | None = None  # measured at the first stage with work to do, not for a finished run
    skipped: list[str] = []
    for i, stage in enumerate(stages, 1):
        inputs = stage.inputs()
        fp = fingerprint(stage.name, stage.config, inputs)
        if is_up_to_date(stage.record, fp, stage.outputs):
            _print_stage(console, i, len(stages), stage, "skipped (up to date)")
            skipped.append(stage.name)
            if budget is not None:
                budget.skipped(stage.name)
            if on_stage:
                on_stage(stage.name, "skipped (up to date)")
            continue
        if budget is None:
            speed = _measure(run, console)
            budget = Budget(speed, [StageEstimate(s.name, s.kind, s.cost(speed)) for s in stages])
            for name in skipped:
                budget.skipped(name)
            _print_budget(console, budget, stages, first=True)
            write_json(out / "estimate.json", budget.to_dict())
        if stage.record.is_file():  # finished earlier for other inputs: its outputs are stale
            stage.clean()
        _print_stage(console, i, len(stages), stage, "running")
        if on_stage:
            on_stage(stage.name, "running")
        started, cpu_started = time.perf_counter(), time.process_time()
        stage.run()
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        write_record(stage.record, stage.name, fp, stage.config, inputs, seconds, cpu)
        _print_stage(console, i, len(stages), stage, f"done in {seconds:.1f} s (CPU {cpu:.1f} s)")
        budget.finished(stage.name, seconds)
        if i < len(stages):
            _print_budget(console, budget, stages, first=False)
        write_json(out / "estimate.json", budget.to_dict())
        if on_stage:
            on_stage(stage.name, "done")
    return out
