"""`build_explorer`: DIR/explorer/ (index.html, explorer.js, explorer.css, data.js, thumbs/*.png).

Opened from disk, offline: data.js sets `window.FORTIFY_EXPLORER` (a <script src> works from file://,
where fetching a JSON file does not), the page requests nothing but its own files, and the list draws
only the rows on screen, so thousands of images stay responsive. One row per test image; in a reproduce
run the normal and the adversarial model's outcomes on the same image sit in one row, and in a
cross-validated run every fold's test images appear once, with the models of the fold that held them out.
The folder is written beside itself and swapped in at the end, so a failure leaves the old one intact.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

from fortify.errors import ConfigError
from fortify.fileio import atomic_write_text
from fortify.report.explorer.records import (
    Evaluated,
    certified_entry,
    load_evaluation,
    model_entry,
    patient_entries,
)
from fortify.report.explorer.sources import find_sources, usable
from fortify.report.explorer.thumbs import cam_thumbs, clean_thumb, model_thumbs, perturbation_scale
from fortify.report.folder_swap import replacing_folder

STATIC = ("index.html", "explorer.js", "explorer.css")
FORMAT = "fortify-explorer/1"


def _rows(evals: list[Evaluated]) -> tuple[list[dict], dict[tuple, int]]:
    """One row per test image (fold, path), models merged; and each (evaluation, image) -> its row.

    Short keys keep data.js small at thousands of rows: i row (its thumbnails' number), p path, y true
    class, f fold, g patient/scan, c certify's record, m per model (records.model_entry: cp/cc clean
    prediction and confidence, ap/ac per attack, ff first attack that fooled it, l2 CW's minimal L2,
    pr probabilities [clean, *attacks][class], rho explain's attention shift, cam its maps drawn). The
    patients sit beside the rows, once each (payload "patients", _patients)."""
    rows: list[dict] = []
    at: dict[tuple, int] = {}
    where: dict[tuple, int] = {}
    for e, ev in enumerate(evals):
        for i, path in enumerate(ev.paths):
            key = (ev.source.fold, path)
            if key not in at:
                at[key] = len(rows)
                group = ev.groups[i] if ev.groups and i < len(ev.groups) else None
                row = {"i": len(rows), "p": path, "y": int(ev.t["labels"][i]), "f": ev.source.fold}
                rows.append({**row, "g": None if group is None else str(group), "m": {}})
            row = rows[at[key]]
            row["m"][ev.source.model] = model_entry(ev, i)
            cert = certified_entry(ev, i)
            if cert is not None:
                row["c"] = cert
            where[(e, i)] = at[key]
    return rows, where


def _models(evals: list[Evaluated], scales: dict[str, float]) -> list[dict]:
    """Each model once (a CV run's folds share the names), with its attacks and perturbation scale."""
    seen: dict[str, dict] = {}
    for ev in evals:
        name = ev.source.model
        if name in seen:
            continue
        ckpt = ev.results.get("checkpoint") or {}
        seen[name] = {
            "name": name,
            "attacks": ev.attacks,
            "specs": [((ev.results.get("attacks") or {}).get(k) or {}).get("spec", k) for k in ev.attacks],
            "cw": ev.cw_key,
            "scale": round(scales[name], 2),
            "eps": ev.eps,
            "arch": ckpt.get("model"),
            "mode": ckpt.get("mode"),
            "cam_attack": ev.cam_attack,
        }
    return list(seen.values())


def _patients(evals: list[Evaluated]) -> dict[str, dict[str, dict]]:
    """model -> "<fold>|<patient id>" -> records.patient_entries' record (a row finds its patient by its
    fold and its `g`; the fold keeps apart two folds' patients of one name)."""
    out: dict[str, dict[str, dict]] = {}
    for ev in evals:
        fold = "" if ev.source.fold is None else str(ev.source.fold)
        for pid, entry in patient_entries(ev).items():
            out.setdefault(ev.source.model, {})[f"{fold}|{pid}"] = entry
    return out


def _payload(kind: str, root: Path, evals: list[Evaluated], rows: list[dict], scales, notes) -> dict:
    first = evals[0].results
    data = first.get("data") or {}
    patients = _patients(evals)
    return {
        "format": FORMAT,
        "title": f"{root.name}: {len(rows)} test images",
        "kind": kind,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "classes": evals[0].classes,
        "synthetic": bool(data.get("synthetic")),
        "image_size": data.get("image_size"),
        "models": _models(evals, scales),
        "folds": sorted({ev.source.fold for ev in evals if ev.source.fold is not None}),
        "has": {
            "groups": any(r["g"] is not None for r in rows),
            "certify": any("c" in r for r in rows),
            "cw": any(ev.cw_key for ev in evals),
            "explain": any(ev.shift for ev in evals),
            "cam": any(ev.cams for ev in evals),
            "patients": bool(patients),
        },
        "patients": patients,
        "patient_rule": (first.get("patient") or {}).get("rule_text"),
        "notes": notes,
        "rows": rows,
    }


def _write_thumbs(folder: Path, evals: list[Evaluated], where: dict[tuple, int], scales) -> None:
    folder.mkdir(parents=True)
    drawn: set[int] = set()
    for e, ev in enumerate(evals):
        clean, adv, model = ev.t["clean"], ev.t["adv"], ev.source.model
        for i in range(len(ev.paths)):
            row = where[(e, i)]
            if row not in drawn:
                clean_thumb(folder, row, clean[i])
                drawn.add(row)
            model_thumbs(folder, row, model, clean[i], adv[i], scales[model])
            if ev.paths[i] in ev.cams:
                cam_thumbs(folder, row, model, clean[i], ev.cams[ev.paths[i]])


def build_explorer(
    path: str | Path, *, out: str | Path | None = None, missing_ok: bool = False
) -> Path | None:
    """Write the explorer of the evaluation(s) under `path` (default `path/explorer/`); return its
    index.html. Evaluations without adversarial.safetensors are left out with a note on the page; when
    none has it (or there is no evaluation at all), ConfigError, or None with `missing_ok` (the report
    stage of a run evaluated before adversarial.safetensors existed)."""
    try:
        kind, sources = find_sources(path)
    except ConfigError:
        if missing_ok:
            return None
        raise
    kept, notes = usable(sources)
    if not kept:
        if missing_ok:
            return None
        raise ConfigError(notes[0])
    root = Path(path).expanduser().resolve()
    evals = [load_evaluation(s) for s in kept]
    scales: dict[str, float] = {}
    for ev in evals:  # the first evaluation of each model sets its scale (the folds share one budget)
        scales.setdefault(ev.source.model, perturbation_scale(ev.eps, ev.t["clean"], ev.t["adv"]))
    rows, where = _rows(evals)
    target = Path(out) if out is not None else root / "explorer"
    with replacing_folder(target, ".explorer-") as scratch:
        _write_thumbs(scratch / "thumbs", evals, where, scales)
        payload = _payload(kind, root, evals, rows, scales, notes)
        text = json.dumps(payload, separators=(",", ":"), allow_nan=False)
        atomic_write_text(scratch / "data.js", f"window.FORTIFY_EXPLORER = {text};\n")
        static = resources.files("fortify.report.explorer") / "static"
        for name in STATIC:
            atomic_write_text(scratch / name, (static / name).read_text(encoding="utf-8"))
    return target / "index.html"


def explorer_size(folder: str | Path) -> int:
    """Bytes under an explorer folder (the size the docs state)."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
