"""`fortify audit`: argument parsing and printing only; the logic is in fortify.data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from fortify.cli import options
from fortify.cli.printing import with_warning_lines
from fortify.data.groups import NEAR_DUP_THRESHOLD

NAME = "audit"


def _scan_table(scans: dict[str, Any] | None, classes: list[str], console: Console) -> None:
    """Reconstructed scans per class, and the link threshold's calibration against documented cases."""
    if not scans:
        return
    if str(scans.get("applied", "")).startswith("dicom"):
        d = scans.get("dicom") or {}
        rest = (
            f"; {d['files_without_tags']} file(s) without tags grouped by image"
            if d.get("rest_grouped_by")
            else ""
        )
        console.print(f"groups: by DICOM tag ({scans['applied'][6:]}), {d.get('keys', '?')} distinct{rest}")
        return
    if scans.get("applied") != "scan":
        console.print(f"[yellow]scans:[/] {scans.get('fallback', 'not reconstructed')}", highlight=False)
        return
    cal = scans.get("calibration") or {}
    documented = cal.get("documented_cases")
    if not cal.get("thresholds"):  # a table of headers says nothing
        console.print("scans: no scans reconstructed (file names carry no numbers)", highlight=False)
        return
    t = Table(
        title=f"Scans (runs of similar consecutive slices; link threshold {scans['scan']['threshold']:g})",
        title_justify="left",
    )
    t.add_column("link threshold")
    for c in classes:
        t.add_column(c, justify="right")
    for th, runs in cal.get("thresholds", {}).items():
        chosen = float(th) == float(scans["scan"]["threshold"])
        t.add_row(
            th + (" (used)" if chosen else ""),
            *(str(runs[c]) for c in classes),
            style="bold" if chosen else None,
        )
    if documented:
        t.add_row("documented cases", *(str(documented.get(c, "")) for c in classes), style="italic")
    console.print(t)
    console.print(
        f"{scans['groups']} groups after merging runs with near-duplicate groups "
        f"(largest {scans['largest_group']})"
    )


def _input_lines(inputs: dict[str, Any] | None, console: Console) -> None:
    """Formats read, colour modes converted to gray, and images the resize enlarges: accepted, but said."""
    if not inputs:
        return
    console.print("formats: " + ", ".join(f"{k} {v}" for k, v in inputs["formats"].items()), highlight=False)
    converted = inputs["converted_to_gray"]
    if converted:
        modes = ", ".join(f"{k} {v}" for k, v in converted.items())
        console.print(f"converted to 8-bit gray: {modes} (models see one channel)", highlight=False)
    up = inputs["upscaled"]
    if up["n"]:
        console.print(
            f"upscaled: {up['n']} image(s) smaller than {up['image_size']} px (smallest {up['smallest']}) "
            "are enlarged to it: their detail is interpolated",
            highlight=False,
        )


def _audit_tables(report: dict[str, Any], console: Console) -> None:
    ds = report["dataset"]
    title = f"Dataset {ds['root']}" + ("  [bold red](SYNTHETIC phantom)[/]" if ds["synthetic"] else "")
    t = Table(title=title, title_justify="left")
    for col in ("class", "images", "sizes (original WxH: count)", "modes"):
        t.add_column(col)
    for c in ds["classes"]:
        sizes = ", ".join(f"{k}: {v}" for k, v in report["sizes"].get(c, {}).items())
        modes = ", ".join(f"{k}: {v}" for k, v in report["modes"].get(c, {}).items())
        t.add_row(c, str(report["counts"][c]), sizes, modes)
    t.add_row("total", str(ds["n_images"]), "", "", style="bold")
    console.print(t)
    _input_lines(report.get("inputs"), console)
    ident = ds.get("identity") or {}
    if ident:
        name = ident.get("name") or "not identified; reports show fortify's Table 1 rows without the study's"
        console.print(f"dataset: {name} ({ident.get('reason', '')})", highlight=False)

    ex, nd = report["exact_duplicates"], report["near_duplicates"]
    s = Table(title="Integrity", title_justify="left", show_header=False)
    s.add_row("unreadable files", str(len(report["unreadable"])))
    for item in report["unreadable"]:
        s.add_row("", f"{item['path']}: {item['reason']}")
    s.add_row(
        "exact duplicates",
        f"{ex['n_pairs']} pairs in {ex['n_groups']} groups, {ex['cross_class_groups']} across classes",
    )
    s.add_row(
        "near-duplicate groups",
        f"{nd['n_groups']} groups, {nd['images_in_groups']} images, "
        f"largest {nd['largest_group']}, {nd['cross_class_groups']} across classes",
    )
    s.add_row("near-duplicate rule", f"{nd['method']}, threshold {nd['threshold']}")
    console.print(s)
    _scan_table(report.get("scans"), ds["classes"], console)
    _dicom_and_given_tables(report, console)

    sc = Table(title="Shortcut check", title_justify="left")
    for col in ("property", "class", "evidence", "verdict"):
        sc.add_column(col)
    for item in report["shortcuts"]["exclusive_values"]:
        sc.add_row(
            f"{item['property']} {item['value']}",
            item["class"],
            f"only in this class ({item['count']})",
            "[red]shortcut[/]" if item["flagged"] else "too rare to matter",
        )
    for item in report["shortcuts"]["single_property_auc"]:
        verdict = {"strong": "[red]shortcut[/]", "moderate": "[yellow]moderate[/]", "none": "ok"}[
            item["level"]
        ]
        sc.add_row(item["property"], item["class"], f"AUC {item['auc']:.3f} ({item['direction']})", verdict)
    console.print(sc)


def _dicom_and_given_tables(report: dict[str, Any], console: Console) -> None:
    """DICOM tag counts, and predefined train/val/test folders with their cross-folder duplicates."""
    d = report.get("dicom")
    if d:
        t = Table(
            title=f"DICOM ({d['files']} files, {d.get('window_hu') or 'no window'})", title_justify="left"
        )
        t.add_column("")
        t.add_column("count", justify="right")
        for key, tag in (
            ("patients", "PatientID"),
            ("studies", "StudyInstanceUID"),
            ("series", "SeriesInstanceUID"),
        ):
            t.add_row(key, f"{d[key]} ({d[f'files_without_{tag}']} files without {tag})")
        t.add_row("modalities", ", ".join(f"{k}: {v}" for k, v in d["modalities"].items()))
        t.add_row("slice thickness (mm)", ", ".join(f"{k}: {v}" for k, v in d["slice_thickness_mm"].items()))
        t.add_row("patients per class", ", ".join(f"{k}: {v}" for k, v in d["patients_per_class"].items()))
        console.print(t)
    g = report.get("given_splits")
    if g:
        classes = report["dataset"]["classes"]
        t = Table(title="Predefined splits (folders)", title_justify="left")
        t.add_column("split")
        for c in classes:
            t.add_column(c, justify="right")
        for name, per_class in g["counts"].items():
            t.add_row(name, *(str(per_class[c]) for c in classes))
        console.print(t)
        for kind, leak in g["leaks"].items():
            what = "patients in" if kind == "patient" else f"{kind}-duplicate groups across"
            line = f"{what} several folders: {leak['n_groups']}"
            console.print(f"[red]{line}[/]" if leak["n_groups"] else line, highlight=False)
            for group in leak["groups"][:5]:
                console.print(f"  {' <-> '.join(group['example'])}", highlight=False)


def audit(
    data: str = typer.Argument(..., help="Dataset folder (one subfolder per class) or 'phantom[:n=N]'."),
    as_json: bool = options.as_json("Print the report as JSON on stdout."),
    out: Path | None = options.out("Also write the JSON report to this file.", required=False),
    image_size: int = typer.Option(128, "--image-size", help="Preprocessing size (for the decode cache)."),
    near_dup: float = typer.Option(
        NEAR_DUP_THRESHOLD,
        "--near-dup-threshold",
        help="Max mean |grey-level difference| of 16x16 thumbnails.",
    ),
    window: str = options.window_option(),
) -> None:
    """Report counts, sizes, unreadable files, duplicates, near-duplicates and shortcut warnings."""
    from fortify.data import audit_dataset
    from fortify.fileio import write_json

    options.check_out_file(out, "audit.json")
    report, printed = with_warning_lines(
        lambda: audit_dataset(
            data, image_size=image_size, progress=True, near_dup_threshold=near_dup, window=window
        )
    )
    if out is not None:
        write_json(out, report)
    if as_json:
        print(json.dumps(report, indent=2))
        return
    console = Console()
    _audit_tables(report, console)
    for line in report["warnings"]:
        if line in printed:  # already on stderr
            continue
        console.print(f"[yellow]warning:[/] {line}", highlight=False)
    if out is not None:
        console.print(f"wrote {out}")


def register(app: typer.Typer) -> None:
    """Add `fortify audit` to the app."""
    app.command(NAME)(audit)
