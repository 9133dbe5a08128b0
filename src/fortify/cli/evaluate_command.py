"""`fortify evaluate`: argument parsing and the summary table; the logic is in fortify.evaluation."""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from fortify.attacks import format_value
from fortify.cli import model_options, options
from fortify.cli.out_folder import claim_out
from fortify.cli.printing import data_warnings_reported, note_nothing_to_resume, warning_line, wide_console
from fortify.errors import ConfigError
from fortify.evaluation.settings import DEFAULTS
from fortify.number_text import parse_number

NAME = "evaluate"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _threat(tm: dict | None) -> str:
    if not tm:
        return "unbounded"
    eps = tm["eps"]
    levels = eps * 255
    shown = f"{levels:.3g}/255" if tm["norm"] == "linf" else f"{eps:.3g}"
    return f"{'Linf' if tm['norm'] == 'linf' else 'L2'} {shown}"


def _fails_for(results: dict, keys: list[str]) -> list[str]:
    return [c["check"] for c in results["sanity"] if not c["passed"] and set(c["undermines"]) & set(keys)]


def print_summary(results: dict, console: Console, out: Path | None = None) -> None:
    """The results table, the accuracy-vs-eps curves, transfer, the sanity checks and where the files are."""
    console.print(_results_table(results))
    for key, res in results["attacks"].items():
        if res.get("cw_median_l2") is not None:
            console.print(
                f"{key}: median L2 of unbounded CW on correctly classified images {res['cw_median_l2']:.3g}"
            )
    if results["curves"]:
        console.print(_curves_table(results["curves"]))
    for pair in results.get("transfer", []):
        console.print(
            f"transfer {pair['attack']} from {pair['source']}: accuracy {_pct(pair['transfer_accuracy'])} "
            f"(white-box on this model {_pct(pair['white_box_accuracy'])}, "
            f"clean {_pct(pair['clean_accuracy'])})"
        )
    _print_patients(results.get("patient"), console)
    _print_sanity(results["sanity"], console)
    leak = (results.get("leakage_sentinel") or {}).get("warning")
    if leak:  # written into results.json; a reader of the console must see it too
        warning_line(leak)
    if out is not None:
        console.print(
            f"results: {out / 'results.json'}  examples: {out / 'examples.safetensors'}  "
            f"({results['seconds_total']:.0f} s)"
        )


def _results_table(results: dict) -> Table:
    """One row per set (clean, each attack, combined, worst case); a number a failed check undermines is
    red."""
    data, ckpt = results["data"], results["checkpoint"]
    synthetic = "  [bold red](SYNTHETIC phantom data)[/]" if data["synthetic"] else ""
    m2n = results.get("malignant_to_normal")
    title = f"{ckpt['model']} ({ckpt['mode']}) on {data['n']} test images, {data['image_size']} px{synthetic}"
    if ckpt.get("class_bias"):  # an operating point: the offsets are part of the model that was attacked
        title += f", logit offsets {ckpt['class_bias']}"
    # at least as wide as its title, so the title (the model, and any logit offsets) never wraps
    table = Table(title=title, title_justify="left", min_width=len(Text.from_markup(title).plain))
    columns = ["set", "threat model", "acc", "bal. acc", "success", "malig.->normal", "s", "sanity"]
    if m2n is None:  # the data has no malignant and normal classes: no column to leave empty
        columns.remove("malig.->normal")
    for col in columns:
        table.add_column(col, justify="left" if col in ("set", "threat model", "sanity") else "right")

    def row(
        name: str, tm: str, block: dict, keys: list[str], count_key: str | None, extra: dict | None = None
    ):
        fails = _fails_for(results, keys)
        flag = "[bold red]FAIL: " + "; ".join(fails) + "[/]" if fails else ("[green]ok[/]" if keys else "")
        acc = _pct(block["accuracy"])
        cells = [name, tm, f"[bold red]{acc}[/]" if fails else acc, _pct(block["balanced_accuracy"])]
        cells.append(_pct((extra or {}).get("success_rate")))
        if m2n is not None:
            cells.append(str(m2n[count_key]) if count_key in m2n else "")
        cells += [f"{extra['seconds']:.1f}" if extra and "seconds" in extra else "", flag]
        table.add_row(*cells)

    row("clean", "none", results["clean"], [], "clean")
    for key, res in results["attacks"].items():
        row(key, _threat(res["threat_model"]), res, [key], key, res)
    if "combined" in results:
        comb = results["combined"]
        row("combined", "+".join(comb["attacks"]), comb, comb["attacks"], None)
    worst = results["worst_case"]
    row("worst case", "any attack", worst, worst["attacks"], "worst_case")
    return table


def _curves_table(curves: dict) -> Table:
    """Accuracy at each eps of the curves, one row per curve attack."""
    table = Table(title="Accuracy vs eps", title_justify="left")
    table.add_column("attack")
    eps_values = sorted({p[0] for c in curves.values() for p in c["points"]})
    for e in eps_values:
        table.add_column(f"{255 * e:g}/255", justify="right")
    for key, curve in curves.items():
        by_eps = {p[0]: p[1] for p in curve["points"]}
        table.add_row(f"{key} ({curve['spec']})", *(_pct(by_eps.get(e)) for e in eps_values))
    return table


def _print_patients(patient: dict | None, console: Console) -> None:
    """One line: the patient-level clean, joint-attack and worst-case accuracy (results["patient"])."""
    if not patient:
        return
    joint = patient.get("joint")
    parts = [f"clean {_pct(patient['clean']['accuracy'])}"]
    if joint is not None:
        parts.append(f"joint attack {_pct(joint['accuracy'])} ({joint['spec']})")
    parts.append(f"worst case {_pct(patient['worst_case']['accuracy'])}")
    console.print(
        f"patients ({patient['n']}, rule {patient['rule']}, groups from {patient['groups_from']}): "
        + ", ".join(parts)
    )


def _print_sanity(sanity: list[dict], console: Console) -> None:
    """The sanity checks, PASS or FAIL, and a warning line when any failed."""
    checks = Table(title="Sanity checks (Carlini et al. 2019)", title_justify="left")
    for col in ("", "check", "detail"):
        checks.add_column(col)
    for c in sanity:
        verdict = "[green]PASS[/]" if c["passed"] else "[bold red]FAIL[/]"
        checks.add_row(verdict, c["check"], c["detail"])
    console.print(checks)
    failed = [c for c in sanity if not c["passed"]]
    if failed:
        console.print(
            f"[bold red]{len(failed)} sanity check(s) FAILED: the numbers marked FAIL above may overstate "
            "robustness.[/]"
        )


# The options only `fortify evaluate` has (the shared ones are in options.py and model_options.py).
ATTACKS = typer.Option(
    None, "--attacks", help="Attack spec, repeatable (default: fgsm, pgd-20, budgeted cw, strong at --eps)."
)
EPS = typer.Option("2/255", "--eps", help="Headline L-inf budget for the default attacks.")
EPS_CURVE = typer.Option(
    ",".join(format_value(e) for e in DEFAULTS.eps_curve),
    "--eps-curve",
    help="Comma-separated eps values for the curves.",
)
CURVE_ATTACKS = typer.Option(
    None,
    "--curve-attack",
    help="Curve attack template without eps, repeatable (default: "
    + ", ".join(str(t) for t in DEFAULTS.curve_attacks)
    + ").",
)
EXAMPLES = typer.Option(DEFAULTS.examples_per_class, "--examples-per-class", min=0)
RESUME = options.resume("Reuse the finished work units in --out (an interrupted evaluation).")
UNIT_SIZE = typer.Option(
    DEFAULTS.unit_size, "--unit-size", min=1, help="Test images per work unit (the grain of resume)."
)
PATIENT_RULE = typer.Option(
    DEFAULTS.patient_rule,
    "--patient-rule",
    help="How a patient's slices decide: mean (argmax of the mean probability), vote, or max:<class> "
    "(e.g. max:malignant: any slice predicted malignant).",
)
TRANSFER_FROM = typer.Option(
    None,
    "--transfer-from",
    help="Craft --transfer-attack on this other checkpoint and test it on --checkpoint.",
)
TRANSFER_ATTACK = typer.Option(
    None,
    "--transfer-attack",
    help=f"Spec for --transfer-from (default: pgd:eps=<--eps>,steps={DEFAULTS.pgd_steps}).",
)


def evaluate(
    checkpoint: Path | None = model_options.CHECKPOINT,
    data: str = options.data(),
    split: Path | None = options.split(),
    attacks: list[str] | None = ATTACKS,
    eps: str = EPS,
    eps_curve: str = EPS_CURVE,
    curve_attacks: list[str] | None = CURVE_ATTACKS,
    batch_size: int = options.batch_size(DEFAULTS.batch_size),
    limit: int | None = options.limit("Evaluate only N test images (stratified)."),
    examples_per_class: int = EXAMPLES,
    seed: int = options.seed(),
    device: str = options.device(),
    precision: str = options.precision(),
    out: Path = options.out("Output folder for results.json and examples.safetensors."),
    force: bool = options.force(),
    resume: bool = RESUME,
    unit_size: int = UNIT_SIZE,
    patient_rule: str = PATIENT_RULE,
    transfer_from: Path | None = TRANSFER_FROM,
    transfer_attack: str | None = TRANSFER_ATTACK,
    arch: str | None = model_options.ARCH,
    weights: Path | None = model_options.WEIGHTS,
    num_classes: int | None = model_options.NUM_CLASSES,
    channels: int | None = model_options.CHANNELS,
    image_size: int | None = model_options.IMAGE_SIZE,
    mean: str | None = model_options.MEAN,
    std: str | None = model_options.STD,
) -> None:
    """Evaluate a checkpoint: clean, per-attack, combined and worst-case accuracy, curves, sanity checks.

    Under torchrun (`torchrun --nproc-per-node N -m fortify evaluate ...`) the work units are shared out
    among the processes and rank 0 writes the results, identical to a single process's."""
    from fortify.distributed import shutdown
    from fortify.evaluation.loading import check_checkpoint_path
    from fortify.runtime import Runtime

    # Every check that can fail on user input runs before any work, so a mistake costs nothing.
    model = model_options.open_model_options(
        checkpoint, arch, weights, num_classes, channels, image_size, mean, std
    )
    settings = _settings(
        eps, eps_curve, attacks, curve_attacks, transfer_attack, batch_size, limit, examples_per_class, seed
    ).replace(unit_size=unit_size, patient_rule=patient_rule)
    if transfer_from is not None:
        if not isinstance(model, Path):
            raise ConfigError("--transfer-from needs a fortify checkpoint as --checkpoint")
        check_checkpoint_path(transfer_from)
    runtime = Runtime.resolve(device, precision)
    dist = claim_out(out, force, resume, runtime.device.type)
    if dist.is_main and resume and not (out / "units").is_dir():
        note_nothing_to_resume(out)
    with data_warnings_reported():
        results = _run_evaluation(
            model, checkpoint, transfer_from, data, split, out, settings, runtime, resume
        )
    shutdown(dist)  # every process leaves the group together (rank 0 has written the results)
    if results is not None:  # None: a torchrun process other than rank 0 (its units went to rank 0)
        _report(results, out)


def _report(results: dict, out: Path) -> None:
    units = results["units"]
    if units["reused"]:
        print(f"reused {units['reused']} of {units['count']} units from {out / 'units'}", file=sys.stderr)
    print_summary(results, wide_console(120), out)


def _settings(
    eps, eps_curve, attacks, curve_attacks, transfer_attack, batch_size, limit, examples_per_class, seed
):
    """The options as EvalSettings: every attack text a person typed is parsed here, once."""
    from fortify.attacks import ThreatModel, parse_spec
    from fortify.evaluation import EvalSettings

    headline = parse_number(eps, "--eps", lo=0, hi=1)
    return EvalSettings(
        threat_model=ThreatModel("linf", headline),
        attacks=[parse_spec(a) for a in attacks] if attacks else None,
        eps_curve=[parse_number(v, "--eps-curve", lo=0, hi=1) for v in eps_curve.split(",") if v.strip()],
        curve_attacks=(
            [parse_spec(t, template=True) for t in curve_attacks] if curve_attacks else DEFAULTS.curve_attacks
        ),
        transfer_attack=parse_spec(transfer_attack) if transfer_attack else None,
        batch_size=batch_size,
        limit=limit,
        examples_per_class=examples_per_class,
        seed=seed,
    ).validate()


def _run_evaluation(
    model, checkpoint, transfer_from, data, split, out, settings, runtime, resume
) -> dict | None:
    """Transfer first (when asked), then the evaluation that records it."""
    from fortify.evaluation import evaluate_checkpoint, evaluate_transfer

    transfer = None
    if transfer_from is not None:
        pair = evaluate_transfer(
            transfer_from,
            checkpoint,
            data=data,
            settings=settings,
            split=split,
            runtime=runtime,
            progress=True,
        )
        transfer = [pair]
    return evaluate_checkpoint(
        model,
        data=data,
        settings=settings,
        split=split,
        out_dir=out,
        runtime=runtime,
        progress=True,
        transfer=transfer,
        resume=resume,
        on_loaded=partial(_print_estimate, settings, runtime),
    )


def _print_estimate(settings, runtime, loaded) -> None:
    """The predicted time, once the model and test set are loaded (this machine measured on a copy of the
    model: a few seconds); benchmarks/estimates.py checks the cost model against measured runs."""
    from fortify.pipeline.estimate import evaluate_estimate, fmt_minutes

    n, info = len(loaded.y), loaded.info
    seconds = evaluate_estimate(
        loaded.model,
        settings.replace(limit=None),
        n,
        int(info["image_size"]),
        int(info["in_channels"]),
        runtime,
    )
    print(f"estimated time: about {fmt_minutes(seconds)} ({n} test images, this machine)", file=sys.stderr)


def register(app: typer.Typer) -> None:
    """Add `fortify evaluate` to the app."""
    app.command(NAME)(evaluate)
