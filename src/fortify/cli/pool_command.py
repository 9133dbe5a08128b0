"""`fortify pool`: one model's K-fold figures from its per-fold `fortify evaluate` results, and a paired
comparison with another model on the same folds. Argument parsing and printing; the logic is in
fortify.evaluation.cv (pool_evaluations, compare_pooled)."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from fortify.errors import FortifyError

NAME = "pool"


def _results_files(patterns: list[str]) -> list[Path]:
    """Each argument is a results.json, a folder holding one, or a glob of either (quoted, for --against)."""
    files: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise FortifyError(f"{pattern}: matches no file")
        for m in matches:
            path = Path(m)
            path = path / "results.json" if path.is_dir() else path
            if not path.is_file():
                raise FortifyError(f"{path}: no such results.json (written by fortify evaluate)")
            files.append(path)
    return files


def _sources(files: list[Path]) -> list[str]:
    return [f.parent.name or str(f) for f in files]


def _load(files: list[Path]) -> list[dict[str, Any]]:
    from fortify.fileio import read_json

    out = []
    for path in files:
        try:
            results = read_json(path)
        except (OSError, ValueError) as e:
            raise FortifyError(f"{path}: not readable as JSON ({e})") from None
        if not isinstance(results, dict) or "clean" not in results:
            raise FortifyError(f"{path}: not a results.json of fortify evaluate")
        out.append(results)
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _print_pool(pool: dict[str, Any], console: Console) -> None:
    bound = "" if pool["full_strength"] else "≤"  # a cut attack budget: robust numbers are upper bounds
    table = Table(
        title=f"{pool['k']} folds: accuracy (%)", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False
    )
    table.add_column("metric", no_wrap=True)
    for f in pool["folds"]:
        table.add_column(f"{f['source']}\n(n={f['n']})", justify="right")
    table.add_column("mean ± sd [95% t]", justify="right", no_wrap=True)
    table.add_column("pooled [95% Wilson]", justify="right", no_wrap=True)
    for key, s in pool["summary"].items():
        robust = key not in ("clean", "benign_recall", "balanced_accuracy")
        mark = bound if robust else ""
        cells = [_pct(v) for v in s["values"]]
        ci = s["ci"] or [None, None]
        spread = f"{mark}{_pct(s['mean'])} ± {_pct(s['std'])} [{_pct(ci[0])}, {_pct(ci[1])}]"
        p = pool["pooled"].get(key)
        pooled = ""
        if p:
            lo, hi = p["accuracy_ci"] or [None, None]
            pooled = f"{mark}{p['correct']}/{p['n']} = {_pct(p['accuracy'])} [{_pct(lo)}, {_pct(hi)}]"
        table.add_row(key, *cells, spread, pooled)
    console.print(table)
    for name, metrics in pool["pooled"]["per_class"].items():
        parts = []
        for key, m in metrics.items():
            lo, hi = m["recall_ci"] or [None, None]
            parts.append(f"{key} {m['correct']}/{m['n']} [{_pct(lo)}, {_pct(hi)}]")
        console.print(f"recall, {name}: " + "; ".join(parts))
    if pool["malignant_to_normal"]:
        counts = ", ".join(f"{k} {v}" for k, v in pool["malignant_to_normal"].items())
        console.print(f"malignant called normal (all folds): {counts}")
    sentinel = pool["sentinel"]
    if sentinel["mean"] is not None:
        console.print(
            f"raw-pixel 1-NN sentinel: {_pct(sentinel['mean'])} ± {_pct(sentinel['std'])} over "
            f"{sentinel['n']} folds (the model's clean mean: {_pct(pool['summary']['clean']['mean'])})"
        )
    for f in pool["folds"]:
        if f["sentinel_warning"]:
            console.print(f"[bold yellow]![/] {f['source']}: {f['sentinel_warning']}")
    for key, spec in pool["attacks"].items():
        console.print(f"attack {key}: {spec}")
    if pool["full_strength"] is False:
        console.print(
            "[bold yellow]![/] attack budgets were cut in some fold: robust numbers are upper bounds"
        )
    failed = [(f["source"], x) for f in pool["folds"] for x in f["sanity_failed"]]
    console.print("sanity checks: " + ("all passed" if not failed else f"{len(failed)} FAILED"))
    for source, x in failed:
        console.print(f"  [bold red]FAIL[/] {source}: {x}")
    if pool["synthetic"]:
        console.print("[bold yellow]SYNTHETIC[/] data: these numbers say nothing about CT scans")


def _patient_cell(m: dict[str, Any] | None, mark: str) -> str:
    if not m:
        return "-"
    lo, hi = m["accuracy_ci"] or [None, None]
    return f"{mark}{m['correct']}/{m['n']} = {_pct(m['accuracy'])} [{_pct(lo)}, {_pct(hi)}]"


def _print_patients(pools: dict[str, dict[str, Any]], console: Console) -> None:
    """The pooled patient-level figures (each patient tested in one fold), one row per model that has them."""
    rows = {name: pool for name, pool in pools.items() if pool.get("patient")}
    if not rows:
        return
    table = Table(
        title="patients, pooled over the folds: accuracy (%) [95% Wilson]",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for h in ("model", "patients", "clean", "joint", "worst case"):
        table.add_column(h, justify="left" if h == "model" else "right", no_wrap=True)
    for name, pool in rows.items():
        p = pool["patient"]
        mark = "" if pool["full_strength"] else "≤"
        table.add_row(
            name,
            str(p["n"]),
            _patient_cell(p["clean"], ""),
            _patient_cell(p.get("joint"), mark),
            _patient_cell(p.get("worst_case"), mark),
        )
    console.print(table)
    for name, pool in rows.items():
        _print_patient_folds(name, pool, console)
        _print_patient_recalls(name, pool["patient"], console)
    first = next(iter(rows.values()))["patient"]
    if first.get("rule_text"):
        console.print(f"patient rule: {first['rule_text']}")


def _print_patient_folds(name: str, pool: dict[str, Any], console: Console) -> None:
    """Correct patients in each fold for every outcome (clean, each per-slice attack's aggregate, joint,
    worst case): the per-fold spread behind the pooled row, as the image table above shows it."""
    p = pool["patient"]
    per_fold = p.get("correct_per_fold")
    if not per_fold:
        return
    mark = "" if pool["full_strength"] else "≤"
    table = Table(
        title=f"patients ({name}) per fold: correct/patients = accuracy (%)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("outcome", no_wrap=True)
    sizes = p["patients_per_fold"]
    for f, n in zip(pool["folds"], sizes, strict=True):
        table.add_column(f"{f['source']}\n(n={n})", justify="right", no_wrap=True)
    for key, counts in per_fold.items():
        m = "" if key == "clean" else mark
        cells = [f"{m}{c}/{n} = {_pct(c / n if n else None)}" for c, n in zip(counts, sizes, strict=True)]
        table.add_row(key, *cells)
    console.print(table)


def _print_patient_recalls(name: str, p: dict[str, Any], console: Console) -> None:
    """Each class's recall over the pooled patients (clean, joint, worst case) and the malignant patients
    called normal: the per-class view a clinical reader asks for first, beside the accuracies above."""
    blocks = {"clean": p["clean"], "joint": p.get("joint"), "worst case": p.get("worst_case")}
    for cls in p["clean"]["per_class"]:
        parts = []
        for key, block in blocks.items():
            c = (block or {}).get("per_class", {}).get(cls)
            if c:
                lo, hi = c["sensitivity_ci"] or [None, None]
                parts.append(f"{key} {c['correct']}/{c['n']} [{_pct(lo)}, {_pct(hi)}]")
        console.print(f"patient recall ({name}), {cls}: " + "; ".join(parts))
    if p.get("malignant_to_normal"):
        counts = ", ".join(f"{k} {v}" for k, v in p["malignant_to_normal"].items())
        console.print(f"malignant patients called normal ({name}): {counts}")


def _print_paired(
    title: str, comp: dict[str, Any], rows: dict[str, Any], not_compared: dict | None, console: Console
) -> None:
    """One paired table (McNemar per metric) and a line per outcome the two sides measured differently."""
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for h in ("metric", comp["a"], comp["b"], "difference [95%]", f"only {comp['a']}", f"only {comp['b']}"):
        table.add_column(h, justify="left" if h == "metric" else "right", no_wrap=True)
    table.add_column("McNemar p", justify="right")
    for key, m in rows.items():
        lo, hi = m["difference_ci"] or [None, None]
        table.add_row(
            key,
            _pct(m["a_accuracy"]),
            _pct(m["b_accuracy"]),
            f"{_pct(m['difference'])} [{_pct(lo)}, {_pct(hi)}]",
            str(m["b01"]),
            str(m["b10"]),
            f"{m['p_value']:.3g}",
        )
    console.print(table)
    for key, what in (not_compared or {}).items():
        console.print(
            f"not compared: {key} (measured differently: {comp['a']} {what[comp['a']]}; "
            f"{comp['b']} {what[comp['b']]})"
        )


def _print_comparison(comp: dict[str, Any], console: Console) -> None:
    """The paired comparison over images, then over patients where both sides have patient blocks."""
    title = f"paired over {comp['n']} images: {comp['b']} − {comp['a']} (points)"
    _print_paired(title, comp, comp["metrics"], comp.get("not_compared"), console)
    patients = comp.get("patient")
    if patients and (patients["mcnemar"] or patients["not_compared"]):
        title = f"paired over {patients['n']} patients (rule {patients['rule']}): {comp['b']} − {comp['a']}"
        _print_paired(title, comp, patients["mcnemar"], patients["not_compared"], console)


def pool(
    results: list[str] = typer.Argument(
        ..., help="One model's results.json of each test fold (or the folders holding them)."
    ),
    against: list[str] = typer.Option(
        [],
        "--against",
        help="Another model's results on the same folds (repeat, or a quoted glob): paired comparison.",
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Also write the summary (and comparison) to this JSON file."
    ),
) -> None:
    """Pool per-fold `fortify evaluate` results: each fold, mean ± sd over folds, pooled over images."""
    from fortify.evaluation.cv import compare_pooled, pool_evaluations
    from fortify.fileio import write_json

    # rich assumes 80 columns off a terminal (logs, CI); the fold table needs more
    console = Console(width=max(Console().width, 140))
    files = _results_files(results)
    try:
        loaded = _load(files)
        pooled = pool_evaluations(loaded, sources=_sources(files))
        comparison, pools = None, {"results": pooled}
        if against:
            other_files = _results_files(against)
            other = _load(other_files)
            comparison = compare_pooled(other, loaded, a_name="against", b_name="results")
            if all(isinstance(r.get("patient"), dict) for r in other):  # its patients, pooled the same way
                pools["against"] = pool_evaluations(other, sources=_sources(other_files))
    except ValueError as e:
        raise FortifyError(str(e)) from None
    _print_pool(pooled, console)
    _print_patients(pools, console)
    if comparison:
        _print_comparison(comparison, console)
    if out:
        try:
            write_json(out, {"pool": pooled, "comparison": comparison})
        except OSError as e:
            raise FortifyError(f"--out {out}: cannot write ({e.strerror or e})") from None
        console.print(f"written: {out}")


def register(app: typer.Typer) -> None:
    """Add `fortify pool` to the app."""
    app.command(NAME)(pool)
