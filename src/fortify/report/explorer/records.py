"""Reading one evaluation's per-image files for the explorer, never recomputing a prediction.

From results.json: the paths, classes, threat model, attack order, `per_sample.groups` and
`per_sample.probabilities` when present. From adversarial.safetensors: the clean and worst-case images,
every attack's prediction and confidence, the first attack that fooled each image and CW's minimal L2.
From the run's certify/certify.json and explain/explain.json, when those stages ran: the certified
radius and the attention shift of each image, matched by path. From results.json's `patient.per_patient`
(issue 31), when present: each patient's decisions, matched to its images by `per_sample.groups`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fortify.fileio import read_json
from fortify.report.explorer.sources import ADVERSARIAL_FILE, Source


@dataclass
class Evaluated:
    """One evaluation's per-image numbers and images, in the order of its test images."""

    source: Source
    results: dict
    attacks: list[str]
    cw_key: str | None  # the first CW attack: its minimal L2 per image
    t: dict[str, np.ndarray]  # adversarial.safetensors
    paths: list[str]
    groups: list | None  # per_sample.groups (patient/scan ids), aligned with paths
    probabilities: dict[str, list] = field(default_factory=dict)  # "clean" / attack -> [N][C]
    certified: dict[str, dict] = field(default_factory=dict)  # path -> certify's per-image record
    shift: dict[str, float | None] = field(default_factory=dict)  # path -> explain's rank correlation
    cams: dict[str, tuple] = field(default_factory=dict)  # path -> (clean CAM, attacked CAM), uint8 H x W
    cam_attack: str | None = None  # the attack explain ran (its own, not the evaluation's)

    @property
    def classes(self) -> list[str]:
        return list((self.results.get("data") or {}).get("classes") or [])

    @property
    def eps(self) -> float | None:
        tm = self.results.get("threat_model") or {}
        return float(tm["eps"]) if tm.get("norm") == "linf" and tm.get("eps") else None


def _read_tensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k).numpy() for k in f.keys()}, dict(f.metadata() or {})


def load_evaluation(source: Source) -> Evaluated:
    """The evaluation in `source.folder`, with its run's certify and explain records when present."""
    results = read_json(source.folder / "results.json")
    t, meta = _read_tensors(source.folder / ADVERSARIAL_FILE)
    attacks = json.loads(meta.get("attacks", "[]")) or list(results.get("attacks") or {})
    per_sample = results.get("per_sample") or {}
    paths = list(per_sample.get("paths") or [f"image {i}" for i in range(len(t["labels"]))])
    cw = [k for k in attacks if f"cw_l2.{k}" in t]
    ev = Evaluated(source, results, attacks, cw[0] if cw else None, t, paths, per_sample.get("groups"))
    kept = {k.split(".", 1)[1]: t[k] for k in t if k.startswith("prob.")}
    ev.probabilities = {**kept, **(per_sample.get("probabilities") or {})}  # results.json's when present
    if source.run_root is not None:
        ev.certified = _certified(source.run_root / "certify" / "certify.json")
        ev.shift = _shift(source.run_root / "explain" / "explain.json", source.model)
        ev.cams, ev.cam_attack = _cams(source.run_root / "explain", source.model)
    return ev


def _certified(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    payload = read_json(path)
    label = ((payload.get("model") or {}).get("label")) or "smoothed model"
    return {r["path"]: {**r, "model_label": label} for r in payload.get("per_image") or [] if "path" in r}


def _shift(path: Path, model: str) -> dict[str, float | None]:
    if not path.is_file():
        return {}
    payload = read_json(path)
    entry = (payload.get("models") or {}).get(model) or {}
    rho = (entry.get("per_image") or {}).get("rank_correlation") or []
    return dict(zip((payload.get("data") or {}).get("paths") or [], rho, strict=False))


def _cams(folder: Path, model: str) -> tuple[dict[str, tuple], str | None]:
    """explain/cams.safetensors (fortify.explain.cam_file): this model's two maps per image, by path."""
    path = folder / "cams.safetensors"
    if not path.is_file():
        return {}, None
    t, meta = _read_tensors(path)
    if f"clean.{model}" not in t:
        return {}, None
    paths = json.loads(meta.get("paths", "[]"))
    maps = {p: (t[f"clean.{model}"][i], t[f"adv.{model}"][i]) for i, p in enumerate(paths)}
    spec = (read_json(folder / "explain.json").get("attack") or {}).get("spec") if maps else None
    return maps, spec


def _num(v, digits: int = 4):
    """A JSON-ready number: rounded, None for NaN or infinity."""
    v = float(v)
    return None if not math.isfinite(v) else round(v, digits)


def model_entry(ev: Evaluated, i: int) -> dict:
    """Image i under this evaluation's model: clean prediction, each attack's, the first attack that
    fooled it, CW's minimal L2 (None: CW found none, or the clean model was already wrong)."""
    t = ev.t
    clean_ok = int(t["clean_pred"][i]) == int(t["labels"][i])
    cw = None
    if ev.cw_key is not None and clean_ok:
        cw = _num(t[f"cw_l2.{ev.cw_key}"][i])
    entry = {
        "cp": int(t["clean_pred"][i]),
        "cc": _num(t["clean_conf"][i], 3),
        "ap": [int(t[f"pred.{k}"][i]) for k in ev.attacks],
        "ac": [_num(t[f"conf.{k}"][i], 3) for k in ev.attacks],
        "ff": int(t["first_fooled"][i]),
        "l2": cw,
    }
    probs = [ev.probabilities.get(k) for k in ("clean", *ev.attacks)]
    if all(p is not None for p in probs):
        entry["pr"] = [[_num(v, 3) for v in p[i]] for p in probs]
    if ev.paths[i] in ev.cams:
        entry["cam"] = 1
    rho = ev.shift.get(ev.paths[i])
    if rho is not None:
        entry["rho"] = _num(rho, 3)
    return entry


def certified_entry(ev: Evaluated, i: int) -> dict | None:
    """Certify's record of image i: its radius, and the smoothed model's prediction (-1: abstained)."""
    r = ev.certified.get(ev.paths[i])
    if r is None:
        return None
    return {"r": _num(r.get("radius", 0.0)), "p": int(r.get("prediction", -1)), "m": r["model_label"]}


def patient_entries(ev: Evaluated) -> dict[str, dict]:
    """results.json's `patient.per_patient` by patient id, in short keys: n slices, cp the patient-level
    clean prediction, ok whether it is right, sa robust under every per-slice attack's aggregate, j under
    the joint attack and jp its prediction (None: no joint attack ran), w under the worst case, sc the
    slices the joint attack changed. {} for results written before the patient block existed."""
    classes = ev.classes

    def index(name) -> int | None:
        return classes.index(name) if name in classes else None

    out = {}
    for p in (ev.results.get("patient") or {}).get("per_patient") or []:
        robust = p.get("robust") or {}
        per_slice = [v for k, v in robust.items() if k not in ("joint", "worst_case")]
        out[str(p["id"])] = {
            "n": p.get("n_slices"),
            "cp": index(p.get("clean_pred")),
            "ok": bool(p.get("clean_correct")),
            "sa": all(per_slice) if per_slice else None,
            "j": robust.get("joint"),
            "jp": index(p.get("joint_pred")),
            "w": robust.get("worst_case"),
            "sc": p.get("slices_changed"),
        }
    return out
