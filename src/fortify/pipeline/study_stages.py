"""The study on one split (RUN_DIR, or RUN_DIR/fold-<i>): train both models, evaluate each, transfer,
compare, the extras, report. Each stage's work is a top-level function of `At`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from fortify import __version__
from fortify.attacks import AttackSpec
from fortify.config_files import configs_dir
from fortify.evaluation.units import DEFAULT_UNIT_SIZE
from fortify.fileio import read_json, write_json
from fortify.pipeline.estimate import (
    ADVERSARIAL_ROBUST_SHARE,
    ROBUST_SHARE,
    MachineSpeed,
    eval_seconds,
    train_seconds,
)
from fortify.pipeline.profiles import Profile
from fortify.pipeline.stage import At, RunPlan, Stage, rmtree_if_dir, sha_or_missing

if TYPE_CHECKING:
    from fortify.training import TrainConfig


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


def study_stages(run: RunPlan, root: Path, prefix: str = "") -> list[Stage]:
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
        stages += [
            _train_stage(run, root, prefix, name, title, train_cfgs[name]),
            _eval_stage(run, root, prefix, name),
        ]
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
            remove=_remove_transfer_units,
            estimate=_transfer_cost,
            distributed=True,  # its work units are shared out (evaluation.transfer)
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


def _train_stage(run: RunPlan, root: Path, prefix: str, name: str, title: str, cfg: TrainConfig) -> Stage:
    """Training one model of the study (resumed from its last epoch when interrupted)."""
    return Stage(
        prefix + name,
        title,
        root / name / "stage.json",
        [root / name / "best.safetensors", root / name / "best.json"],
        {k: v for k, v in cfg.to_dict().items() if k not in TRAIN_LOCATIONS},
        At(run, root, name, cfg),
        _run_train,
        _train_inputs,
        remove=_remove_model_dir,
        kind="train",
        estimate=_train_cost,
        defaults=train_defaults(),
        # what older records also hashed: the data folder's file times (see _train_inputs) and
        # the split's and init checkpoint's paths (moving the run directory changed them)
        retired_inputs=("data",),
        retired_config=("split", "init"),
    )


def _eval_stage(run: RunPlan, root: Path, prefix: str, name: str) -> Stage:
    """Evaluating one model of the study on its test split."""
    return Stage(
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
        defaults={"unit_size": DEFAULT_UNIT_SIZE},  # records from before units still match
    )


def _checkpoint(at: At, name: str) -> dict[str, str]:
    return {
        f"{name}/best.safetensors": sha_or_missing(at.root / name / "best.safetensors"),
        "split": sha_or_missing(at.split),
    }


def _checkpoint_inputs(at: At) -> dict[str, str]:
    return _checkpoint(at, at.name)


def _both_checkpoints(at: At) -> dict[str, str]:
    return {**_checkpoint(at, "normal"), **_checkpoint(at, "adversarial")}


def _remove_model_dir(at: At) -> None:
    rmtree_if_dir(at.root / at.name)


def _remove_eval_dir(at: At) -> None:
    rmtree_if_dir(at.root / at.name / "eval")


def _train_inputs(at: At) -> dict[str, str]:
    init = at.train_cfg.init
    # Not the dataset folder's identity (file times): the split manifest pins every file's sha256 and
    # training refuses data that differs from it, so a copy of the same data keeps finished models.
    return {
        "split": sha_or_missing(at.split),
        # fine-tuning from the normal model: a new normal model makes this stage stale
        **({"init": sha_or_missing(Path(init))} if init else {}),
    }


def _run_train(at: At) -> None:
    from fortify.training import train

    cfg, report = at.train_cfg, at.run.on_epoch
    on_epoch = None if report is None else (lambda epoch, seconds: report(epoch, seconds, cfg.epochs))
    train(cfg, resume=True, progress=at.run.progress, on_epoch=on_epoch)  # resume=True continues from last.*


def _train_cost(at: At, speed: MachineSpeed) -> float:
    n_train, n_val, _ = at.run.sizes
    return train_seconds(at.train_cfg, n_train, n_val, speed)


def _eval_images(run: RunPlan) -> int:
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
        resume=True,  # an interrupted evaluation continues from its finished units (a rerun for other
        # inputs starts from an empty folder: the stage's `remove` cleared it)
    )


def _eval_cost(at: At, speed: MachineSpeed) -> float:
    from fortify.evaluation.patient_run import joint_steps

    ev = at.run.prof.evaluate
    curve = [(t, float(e)) for t in ev.curve_attacks for e in ev.eps_curve]
    n_eval = _eval_images(at.run)
    robust = ADVERSARIAL_ROBUST_SHARE if at.name == "adversarial" else ROBUST_SHARE
    return eval_seconds(
        at.run.specs,
        curve,
        n_eval,
        ev.sanity_steps_factor,
        ev.sanity_restarts,
        speed,
        ev.curve_cumulative,
        robust,
        joint_steps(ev, at.run.specs),
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
            # kept so an interrupted stage continues from its finished units (stale ones, of a stage
            # rerun for other inputs, were cleared by _remove_transfer_units)
            units_dir=_transfer_units(root) / f"{src}-to-{dst}",
            resume=True,
        )
        for src, dst in (("normal", "adversarial"), ("adversarial", "normal"))
    ]
    if pairs[0] is None:  # a torchrun process other than rank 0: its units went to rank 0
        return
    write_json(root / "transfer.json", {"pairs": pairs, "config": run.transfer_record()})


def _transfer_units(root: Path) -> Path:
    return root / "transfer-units"


def _remove_transfer_units(at: At) -> None:
    rmtree_if_dir(_transfer_units(at.root))


def _transfer_cost(at: At, speed: MachineSpeed) -> float:
    from fortify.pipeline.estimate import attack_passes

    n_eval = _eval_images(at.run)
    grads, forwards = attack_passes(at.run.transfer_attack, n_eval)
    return 2 * (grads * speed.gradient + (forwards + 2 * n_eval) * speed.forward)


def _both_results(at: At) -> dict[str, str]:
    return {
        f"{n}/eval/results.json": sha_or_missing(at.root / n / "eval" / "results.json")
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
    return {str(f.relative_to(out) if f.is_relative_to(out) else f.name): sha_or_missing(f) for f in files}


def _run_report(at: At) -> None:
    from fortify.report import build_report
    from fortify.report.explorer import build_explorer

    build_report(at.root)
    build_explorer(at.root, missing_ok=True)  # RUN_DIR/explorer/: every test image, in a browser


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
        distributed=name in ("detect", "certify"),  # they share their work units out under torchrun
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


TRAIN_LOCATIONS = ("out", "device", "data", "cache_dir", "split", "init")


def train_defaults() -> dict[str, Any]:
    from dataclasses import MISSING, fields

    from fortify.training import TrainConfig

    return {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}
