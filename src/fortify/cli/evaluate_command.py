"""`fortify evaluate`: argument parsing and the summary table; the logic is in fortify.evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import typer
from rich.console import Console
from rich.table import Table

from fortify.cli import model_options, options
from fortify.cli.printing import data_warnings_reported, wide_console
from fortify.errors import ConfigError
from fortify.evaluation.settings import DEFAULTS
from fortify.evaluation.specs import fraction_text
from fortify.numbers import parse_number

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
    _print_sanity(results["sanity"], console)
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
    table = Table(title=title, title_justify="left")
    for col in ("set", "threat model", "acc", "bal. acc", "success", "malig.->normal", "s", "sanity"):
        table.add_column(col, justify="left" if col in ("set", "threat model", "sanity") else "right")

    def row(
        name: str, tm: str, block: dict, keys: list[str], count_key: str | None, extra: dict | None = None
    ):
        fails = _fails_for(results, keys)
        flag = "[bold red]FAIL: " + "; ".join(fails) + "[/]" if fails else ("[green]ok[/]" if keys else "")
        acc = _pct(block["accuracy"])
        table.add_row(
            name,
            tm,
            f"[bold red]{acc}[/]" if fails else acc,
            _pct(block["balanced_accuracy"]),
            _pct((extra or {}).get("success_rate")),
            str(m2n[count_key]) if m2n is not None and count_key in m2n else "",
            f"{extra['seconds']:.1f}" if extra and "seconds" in extra else "",
            flag,
        )

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


def evaluate(
    checkpoint: Path | None = model_options.CHECKPOINT,
    data: str = options.data(),
    split: Path | None = options.split(),
    attacks: list[str] | None = typer.Option(
        None,
        "--attacks",
        help="Attack spec, repeatable (default: fgsm, pgd-20, budgeted cw, strong at --eps).",
    ),
    eps: str = typer.Option("2/255", "--eps", help="Headline L-inf budget for the default attacks."),
    eps_curve: str = typer.Option(
        ",".join(fraction_text(e) for e in DEFAULTS.eps_curve),
        "--eps-curve",
        help="Comma-separated eps values for the curves.",
    ),
    curve_attacks: list[str] | None = typer.Option(
        None,
        "--curve-attack",
        help=f"Curve attack template without eps, repeatable (default: {', '.join(DEFAULTS.curve_attacks)}).",
    ),
    batch_size: int = options.batch_size(DEFAULTS.batch_size),
    limit: int | None = options.limit("Evaluate only N test images (stratified)."),
    examples_per_class: int = typer.Option(DEFAULTS.examples_per_class, "--examples-per-class", min=0),
    seed: int = options.seed(),
    device: str = options.device(),
    precision: str = options.precision(),
    out: Path = options.out("Output folder for results.json and examples.safetensors."),
    force: bool = options.force(),
    transfer_from: Path | None = typer.Option(
        None,
        "--transfer-from",
        help="Craft --transfer-attack on this other checkpoint and test it on --checkpoint.",
    ),
    transfer_attack: str | None = typer.Option(
        None,
        "--transfer-attack",
        help=f"Spec for --transfer-from (default: pgd:eps=<--eps>,steps={DEFAULTS.pgd_steps}).",
    ),
    arch: str | None = model_options.ARCH,
    weights: Path | None = model_options.WEIGHTS,
    num_classes: int | None = model_options.NUM_CLASSES,
    channels: int | None = model_options.CHANNELS,
    image_size: int | None = model_options.IMAGE_SIZE,
    mean: str | None = model_options.MEAN,
    std: str | None = model_options.STD,
) -> None:
    """Evaluate a checkpoint: clean, per-attack, combined and worst-case accuracy, curves, sanity checks."""
    checked = _check_inputs(
        checkpoint=checkpoint,
        model_args=(arch, weights, num_classes, channels, image_size, mean, std),
        attacks=attacks,
        eps=eps,
        eps_curve=eps_curve,
        curve_attacks=curve_attacks,
        transfer_from=transfer_from,
        transfer_attack=transfer_attack,
        out=out,
        force=force,
        device=device,
        precision=precision,
    )
    results = _run_evaluation(
        checked,
        checkpoint=checkpoint,
        data=data,
        split=split,
        attacks=attacks,
        out=out,
        transfer_from=transfer_from,
        batch_size=batch_size,
        limit=limit,
        examples_per_class=examples_per_class,
        seed=seed,
    )
    print_summary(results, wide_console(120), out)


class CheckedInputs(NamedTuple):
    """The options `evaluate` parsed and checked before any work."""

    model: Any  # a fortify checkpoint's path, or a loaded model from elsewhere
    eps: float
    eps_curve: list[float]
    curve_attacks: list[str]
    transfer_spec: str
    runtime: Any


def _check_inputs(
    *,
    checkpoint: Path | None,
    model_args: tuple,
    attacks: list[str] | None,
    eps: str,
    eps_curve: str,
    curve_attacks: list[str] | None,
    transfer_from: Path | None,
    transfer_attack: str | None,
    out: Path,
    force: bool,
    device: str,
    precision: str,
) -> CheckedInputs:
    """Every check that can fail on user input, run before any work, so a mistake costs nothing."""
    from fortify.attacks import parse_spec
    from fortify.evaluation import check_out_dir
    from fortify.evaluation.inputs import check_checkpoint_path
    from fortify.evaluation.specs import DEFAULT_CURVE_ATTACKS, curve_specs, default_pgd_spec, keyed_specs
    from fortify.runtime import Runtime

    model = model_options.open_model_options(checkpoint, *model_args)
    headline = parse_number(eps, "--eps", lo=0, hi=1)
    curve_eps = [parse_number(v, "--eps-curve", lo=0, hi=1) for v in eps_curve.split(",") if v.strip()]
    if attacks:
        keyed_specs(attacks)
    curve_templates = curve_attacks or list(DEFAULT_CURVE_ATTACKS)
    curve_specs(curve_templates)
    transfer_spec = transfer_attack or default_pgd_spec(headline)
    if transfer_from is not None:
        if not isinstance(model, Path):
            raise ConfigError("--transfer-from needs a fortify checkpoint as --checkpoint")
        check_checkpoint_path(transfer_from)
        parse_spec(transfer_spec)
    check_out_dir(out, force)
    runtime = Runtime.resolve(device, precision)
    return CheckedInputs(model, headline, curve_eps, curve_templates, transfer_spec, runtime)


def _run_evaluation(
    checked: CheckedInputs,
    *,
    checkpoint: Path | None,
    data: str,
    split: Path | None,
    attacks: list[str] | None,
    out: Path,
    transfer_from: Path | None,
    batch_size: int,
    limit: int | None,
    examples_per_class: int,
    seed: int,
) -> dict:
    """The transfer attack (with --transfer-from), then the evaluation that writes results.json; the data
    warnings of both are printed after them."""
    from fortify.evaluation import evaluate_checkpoint, evaluate_transfer

    with data_warnings_reported():
        transfer = None
        if transfer_from is not None:
            pair = evaluate_transfer(
                transfer_from,
                checkpoint,
                data=data,
                split=split,
                attack=checked.transfer_spec,
                runtime=checked.runtime,
                batch_size=batch_size,
                progress=True,
                limit=limit,
                seed=seed,
            )
            transfer = [pair]
        results = evaluate_checkpoint(
            checked.model,
            data=data,
            split=split,
            attacks=attacks or None,
            out_dir=out,
            eps=checked.eps,
            eps_curve=checked.eps_curve,
            curve_attacks=checked.curve_attacks,
            runtime=checked.runtime,
            batch_size=batch_size,
            progress=True,
            limit=limit,
            examples_per_class=examples_per_class,
            seed=seed,
            transfer=transfer,
        )
    return results


def register(app: typer.Typer) -> None:
    """Add `fortify evaluate` to the app."""
    app.command(NAME)(evaluate)
