"""Report section for explain.json: where the models look under attack, and cross-architecture transfer.

Reads the payload only; every number and the verdict sentence were computed by fortify.explain. The
figures are PNGs beside explain.json: given `base_dir` (the folder holding explain.json) and the
report's `fig_dir`, they are copied there so the Markdown links and the HTML embeds work."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from fortify.report.doc import Document, Figure, Heading, Para, Table
from fortify.report.fmt import DASH, fmt_ci, num, pct

OUTCOME_LABELS = {
    "fooled": "fooled by the attack",
    "resisted": "resisted the attack",
    "clean_error": "wrong on clean",
}


def _mean_ci(s: dict[str, Any] | None, signed: bool = False) -> str:
    if not s or s.get("mean") is None:
        return DASH
    sign = "+" if signed else ""
    text = f"{s['mean']:{sign}.2f}"
    ci = s.get("ci")
    if ci:
        text += f" [{ci[0]:{sign}.2f}, {ci[1]:{sign}.2f}]"
    return text + f" (n={s.get('n', '?')})"


def _acc(m: dict[str, Any] | None) -> str:
    if not m or m.get("accuracy") is None:
        return DASH
    return pct(m["accuracy"]) + fmt_ci(m.get("accuracy_ci"))


def _copy_figure(base_dir: Path | None, fig_dir: Path | None, rel: str) -> Path | None:
    if base_dir is None or fig_dir is None:
        return None
    src = Path(base_dir) / rel
    if not src.is_file():
        return None
    dst = Path(fig_dir) / src.name
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


def section_explain(
    doc: Document,
    payload: dict[str, Any],
    source: str,
    *,
    base_dir: str | Path | None = None,
    fig_dir: str | Path | None = None,
) -> None:
    doc.add(Heading("Where the models look under attack (class-activation maps)"))
    cam, attack = payload.get("cam") or {}, payload.get("attack") or {}
    top = f"top-{100 * float(cam.get('top_fraction', 0.1)):g}%"
    _intro(doc, payload, cam, attack)
    _models_table(doc, payload, source, top)
    _class_and_outcome_tables(doc, payload, source, top)
    for label, rel in (payload.get("figures") or {}).items():
        path = _copy_figure(Path(base_dir) if base_dir else None, Path(fig_dir) if fig_dir else None, rel)
        if path is not None:
            doc.add(
                Figure(
                    path,
                    f"{label} model, the first test scans of each class that every model gets right: "
                    f"clean scan, adversarial scan ({attack.get('spec', '?')}), perturbation "
                    f"x{num((payload.get('settings') or {}).get('amplify'))} around mid-gray, CAM on clean "
                    "and on adversarial; titles give the predicted class and its softmax confidence "
                    "(red = wrong under attack)",
                    f"{source} figures.{label}",
                )
            )
    if payload.get("transfer"):
        _transfer(doc, payload["transfer"], source)


def _intro(doc: Document, payload: dict[str, Any], cam: dict[str, Any], attack: dict[str, Any]) -> None:
    """What was mapped and attacked, how to read the numbers, and the verdict."""
    data = payload.get("data") or {}
    top = f"top-{100 * float(cam.get('top_fraction', 0.1)):g}%"
    doc.add(
        Para(
            f"{cam.get('package', cam.get('method', '?'))} at layer(s) "
            + ", ".join(f"{k}: {v}" for k, v in (cam.get("layers") or {}).items())
            + f"; target class: {cam.get('target_meaning', cam.get('target', '?'))}; maps in "
            f"{cam.get('precision', '?')}. Attack: {attack.get('spec', '?')} against each model itself "
            f"(run in {attack.get('precision', '?')}, seed {attack.get('seed', '?')}), "
            f"on {data.get('n', '?')} test images"
            + (f" (class-stratified limit {data['limit']})" if data.get("limit") else "")
            + "."
        )
    )
    doc.add(
        Para(
            f"Rank correlation: {cam.get('rank_correlation', '?')}. "
            f"{top} overlap: {cam.get('top_overlap', '?')}. "
            f"1 = the attack left the attention where it was. Intervals: {cam.get('interval', '?')}. "
            f"Outcomes: {cam.get('outcomes', '?')}.",
            "note",
        )
    )
    if payload.get("verdict"):
        doc.add(Para(f"Answer: {payload['verdict']}"))
    if cam.get("target") == "predicted":
        doc.add(
            Para(
                "On fooled images the adversarial map explains the new (wrong) class, so part of their "
                "shift is the change of class itself; the 'resisted' rows compare maps of the same class.",
                "note",
            )
        )


def _models_table(doc: Document, payload: dict[str, Any], source: str, top: str) -> None:
    """One row per model, then the paired differences (all images; images both models resisted)."""
    rows = []
    for label, m in (payload.get("models") or {}).items():
        deg = m.get("degenerate_maps") or {}
        rows.append(
            [
                label,
                f"{m.get('model', '?')} ({m.get('mode', '?')})",
                str(m.get("target_layer", DASH)),
                _acc(m.get("clean")),
                _acc(m.get("adversarial")),
                _mean_ci((m.get("rank_correlation") or {}).get("all")),
                _mean_ci((m.get("top_overlap") or {}).get("all")),
                f"{deg.get('clean', 0)} / {deg.get('adversarial', 0)}",
            ]
        )
    paired = payload.get("paired")
    if paired:
        rows.append(
            [
                "adversarial − normal",
                "paired, same images",
                "",
                "",
                "",
                _mean_ci(paired["rank_correlation"]["all"], signed=True),
                _mean_ci(paired["top_overlap"]["all"], signed=True),
                "",
            ]
        )
        same_rho, same_top = (paired[k].get("both_resisted") for k in ("rank_correlation", "top_overlap"))
        if same_rho and same_top:
            for label in ("normal", "adversarial"):
                rows.append(
                    [f"{label}, images both models resisted", "", "", "", "",
                     _mean_ci(same_rho.get(label)), _mean_ci(same_top.get(label)), ""]
                )  # fmt: skip
            rows.append(
                ["adversarial − normal, images both resisted", "paired", "", "", "",
                 _mean_ci(same_rho, signed=True), _mean_ci(same_top, signed=True), ""]
            )  # fmt: skip
    doc.add(
        Table(
            ["Model", "Architecture", "CAM layer", "Clean acc. %", "Under attack %", "Rank corr.",
             f"{top} overlap", "Constant maps (clean/adv)"],
            rows,
            caption="Attention shift between the clean and the adversarial map of each test image",
            source=f"{source} 'models', 'paired'",
        )
    )  # fmt: skip


def _class_and_outcome_tables(doc: Document, payload: dict[str, Any], source: str, top: str) -> None:
    """Per true class (with the paired differences), then by whether the attack fooled the model."""
    classes = (payload.get("data") or {}).get("classes") or []
    models: dict[str, Any] = payload.get("models") or {}
    paired = payload.get("paired")
    if not (classes and models):
        return
    header = ["Class"]
    for label in models:
        header += [f"{label}: rank corr.", f"{label}: {top} overlap"]
    if paired:
        header += ["paired diff. rank corr.", f"paired diff. {top} overlap"]
    rows = []
    for c in classes:
        row = [c]
        for m in models.values():
            row += [
                _mean_ci((m.get("rank_correlation") or {}).get("per_class", {}).get(c)),
                _mean_ci((m.get("top_overlap") or {}).get("per_class", {}).get(c)),
            ]
        if paired:
            row += [
                _mean_ci(paired["rank_correlation"]["per_class"].get(c), signed=True),
                _mean_ci(paired["top_overlap"]["per_class"].get(c), signed=True),
            ]
        rows.append(row)
    doc.add(Table(header, rows, caption="Per class (true class)", source=f"{source} per_class"))
    rows = []
    for label, m in models.items():
        for outcome, text in OUTCOME_LABELS.items():
            rows.append(
                [
                    label,
                    text,
                    str((m.get("outcome_counts") or {}).get(outcome, 0)),
                    _mean_ci((m.get("rank_correlation") or {}).get("by_outcome", {}).get(outcome)),
                    _mean_ci((m.get("top_overlap") or {}).get("by_outcome", {}).get(outcome)),
                ]
            )
    doc.add(
        Table(
            ["Model", "Images", "n", "Rank corr.", f"{top} overlap"],
            rows,
            caption="By whether the attack fooled the model",
            source=f"{source} by_outcome",
        )
    )


def _transfer(doc: Document, transfer: dict[str, Any], source: str) -> None:
    """Cross-architecture transfer: the surrogate, then each target's clean, transferred and white-box."""
    sur = transfer.get("surrogate") or {}
    doc.add(Heading("Transfer across architectures", 3))
    doc.add(
        Para(
            f"Surrogate: {sur.get('arch', '?')}, standard training for {sur.get('epochs', '?')} epoch(s) "
            f"on the targets' training split (best epoch {sur.get('best_epoch', '?')}, "
            f"{sur.get('run_dir', '?')}); "
            f"clean accuracy on these test images {_acc(transfer.get('surrogate_clean'))}%, on its own "
            f"adversarial images {_acc(transfer.get('surrogate_on_own_adversarial'))}%. "
            f"Attack crafted on the surrogate: {transfer.get('craft_attack', '?')}."
        )
    )
    rows = []
    for label, t in (transfer.get("targets") or {}).items():
        check = t.get("sanity") or {}
        rows.append(
            [
                label,
                _acc(t.get("clean")),
                _acc(t.get("transfer")),
                _acc(t.get("white_box")),
                "PASS" if check.get("passed") else f"FAIL: {check.get('detail', '')}",
            ]
        )
    doc.add(
        Table(
            ["Target", "Clean %", f"Transferred from {sur.get('arch', '?')} %", "White-box %",
             "white-box no weaker than transfer"],
            rows,
            caption="Accuracy of each target on the same test images",
            source=f"{source} 'transfer'",
        )
    )  # fmt: skip
