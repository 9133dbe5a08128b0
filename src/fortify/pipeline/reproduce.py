"""`reproduce`: the whole study in one resumable run directory.

audit → split → normal → normal/eval → adversarial → adversarial/eval → transfer → report.
Each stage writes its outputs (atomically), then a record holding its fingerprint. On `--resume`, a stage
whose record matches and whose outputs exist is skipped; an interrupted training stage continues from its
`last.*` checkpoint. Everything the user can get wrong is checked before the first file is written.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fortify import __version__
from fortify.errors import ConfigError
from fortify.fileio import sha256_file, write_json, write_yaml
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
    return default_attack_specs(
        profile.eps,
        image_size=profile.image_size,
        pgd_steps=ev.pgd_steps,
        pgd_restarts=ev.pgd_restarts,
        cw_steps=ev.cw_steps,
        cw_binary_steps=ev.cw_binary_steps,
        cw_budget=ev.cw_budget,
        strong_steps=ev.strong_steps,
    )


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
    on_stage: Callable[[str, str], None] | None = None,
) -> Path:
    """Run (or resume) the whole study into `out`; return the run directory.

    `on_stage(name, status)` is called with status "running", "done" or "skipped (up to date)" per stage
    (the CLI shows the same through the progress display)."""
    # ---- validate everything before writing anything
    if defense not in DEFENSES:
        raise ConfigError(f"unknown defense {defense!r}; choose one of {', '.join(DEFENSES)}")
    prof = load_profile(profile, overrides)
    data = check_data(data)
    runtime = Runtime.resolve(device, precision)
    out = Path(out).expanduser().resolve()
    cfg = run_config(prof, data, defense, device, precision, runtime, overrides)
    train_cfgs = {
        "normal": _train_config(prof, "normal", "standard", data, out, device, precision),
        "adversarial": _train_config(prof, "adversarial", defense, data, out, device, precision),
    }
    specs = attack_specs(prof)
    ev = prof.evaluate
    pgd_spec = next((s for s in specs if s.startswith("pgd")), f"pgd:eps={prof.eps!r},steps={ev.pgd_steps}")
    transfer_attack = ev.transfer_attack or pgd_spec
    _check_specs(specs, ev.curve_attacks, transfer_attack)
    # the resolved attack specs, so config.yaml alone says exactly what was run
    cfg["resolved"] = {"attacks": specs, "transfer_attack": transfer_attack}
    prepare_out(out, cfg, resume=resume, force=force)

    out.mkdir(parents=True, exist_ok=True)
    write_yaml(out / "config.yaml", cfg)

    from rich.console import Console

    console = Console(stderr=True, quiet=not progress)
    data_id: dict[str, str] = {}

    def data_inputs() -> dict[str, str]:
        if "data" not in data_id:
            data_id["data"] = data_identity(data)
        return dict(data_id)

    # ---- stages
    def run_audit() -> None:
        from fortify.data import audit_dataset

        write_json(out / "audit.json", audit_dataset(data, image_size=prof.image_size, progress=progress))

    def run_split() -> None:
        from fortify.data import make_split, save_manifest

        m = make_split(
            data,
            seed=prof.seed,
            fractions=tuple(prof.fractions),
            image_size=prof.image_size,
            progress=progress,
        )
        save_manifest(m, out / "split.json")

    def run_train(name: str) -> Callable[[], None]:
        def run() -> None:
            from fortify.training import train

            train(train_cfgs[name], resume=True, progress=progress)  # resume=True continues from last.*

        return run

    eval_kwargs = {
        "attacks": specs,
        "eps": prof.eps,
        "eps_curve": list(ev.eps_curve),
        "curve_attacks": list(ev.curve_attacks),
        "batch_size": ev.batch_size,
        "limit": ev.limit,
        "examples_per_class": ev.examples_per_class,
        "seed": prof.seed,
        "sanity_steps_factor": ev.sanity_steps_factor,
        "sanity_restarts": ev.sanity_restarts,
    }

    def run_eval(name: str) -> Callable[[], None]:
        def run() -> None:
            from fortify.evaluation import evaluate_checkpoint

            evaluate_checkpoint(
                out / name / "best.safetensors",
                data=data,
                split=out / "split.json",
                out_dir=out / name / "eval",
                runtime=runtime,
                progress=progress,
                **eval_kwargs,
            )

        return run

    transfer_kwargs = {
        "attack": transfer_attack,
        "batch_size": ev.batch_size,
        "limit": ev.limit,
        "seed": prof.seed,
    }

    def run_transfer() -> None:
        from fortify.evaluation import evaluate_transfer

        pairs = []
        for src, dst in (("normal", "adversarial"), ("adversarial", "normal")):
            pairs.append(
                evaluate_transfer(
                    out / src / "best.safetensors",
                    out / dst / "best.safetensors",
                    data=data,
                    split=out / "split.json",
                    runtime=runtime,
                    progress=progress,
                    source_name=src,
                    target_name=dst,
                    **transfer_kwargs,
                )
            )
        write_json(out / "transfer.json", {"pairs": pairs, "config": transfer_kwargs})

    def run_report() -> None:
        from fortify.report import build_report

        build_report(out)

    def report_inputs() -> dict[str, str]:
        files = [
            out / "config.yaml",
            out / "audit.json",
            out / "split.json",
            out / "transfer.json",
            configs_dir() / "study_table1.yaml",
        ]
        for name in ("normal", "adversarial"):
            files += [
                out / name / "metrics.jsonl",
                out / name / "config.yaml",
                out / name / "eval" / "results.json",
                out / name / "eval" / "examples.safetensors",
            ]
        return {str(f.relative_to(out) if f.is_relative_to(out) else f.name): _sha(f) for f in files}

    def ckpt(name: str) -> dict[str, str]:
        return {
            f"{name}/best.safetensors": _sha(out / name / "best.safetensors"),
            "split": _sha(out / "split.json"),
        }

    def train_fp_config(name: str) -> dict[str, Any]:
        d = train_cfgs[name].to_dict()
        return {k: v for k, v in d.items() if k not in ("out", "device", "data", "cache_dir")}

    stages = [
        Stage(
            "audit",
            "audit the data",
            out / "audit.stage.json",
            [out / "audit.json"],
            {"data": data, "image_size": prof.image_size},
            data_inputs,
            run_audit,
        ),
        Stage(
            "split",
            "split train/val/test",
            out / "split.stage.json",
            [out / "split.json"],
            {"data": data, "seed": prof.seed, "fractions": prof.fractions, "image_size": prof.image_size},
            data_inputs,
            run_split,
        ),
    ]
    for name, title in (("normal", "normal training"), ("adversarial", f"adversarial training ({defense})")):
        stages.append(
            Stage(
                name,
                title,
                out / name / "stage.json",
                [out / name / "best.safetensors", out / name / "best.json"],
                train_fp_config(name),
                lambda n=name: {
                    "split": _sha(out / "split.json"),
                    **data_inputs(),
                    # fine-tuning from the normal model: a new normal model makes this stage stale
                    **({"init": _sha(Path(train_cfgs[n].init))} if train_cfgs[n].init else {}),
                },
                run_train(name),
                clean=lambda n=name: _rmtree(out / n),
            )
        )
        stages.append(
            Stage(
                f"{name}/eval",
                f"evaluate the {name} model",
                out / name / "eval" / "stage.json",
                [out / name / "eval" / "results.json"],
                eval_kwargs,
                lambda n=name: ckpt(n),
                run_eval(name),
                clean=lambda n=name: _rmtree(out / n / "eval"),
            )
        )
    stages += [
        Stage(
            "transfer",
            "transfer between the two models",
            out / "transfer.stage.json",
            [out / "transfer.json"],
            transfer_kwargs,
            lambda: {**ckpt("normal"), **ckpt("adversarial")},
            run_transfer,
        ),
        Stage(
            "report",
            "build the report",
            out / "report" / "stage.json",
            [out / "report" / "report.md", out / "report" / "report.html"],
            {"fortify_version": __version__},
            report_inputs,
            run_report,
        ),
    ]

    for i, stage in enumerate(stages, 1):
        inputs = stage.inputs()
        fp = fingerprint(stage.name, stage.config, inputs)
        if is_up_to_date(stage.record, fp, stage.outputs):
            _print_stage(console, i, len(stages), stage, "skipped (up to date)")
            if on_stage:
                on_stage(stage.name, "skipped (up to date)")
            continue
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
        if on_stage:
            on_stage(stage.name, "done")
    return out
