"""Number formatting and provenance strings shared by the report's sections."""

from __future__ import annotations

from typing import Any

from fortify.report.rundir import RunData, StageData

DASH = "—"
STAGE_LABELS = {"normal": "Normal training", "adversarial": "Adversarial training"}
# Table 1: the study's five columns, then fortify's two extra ones.
TABLE1_COLUMNS = [
    ("clean", "Clean"),
    ("pgd", "PGD"),
    ("fgsm", "FGSM"),
    ("cw", "CW"),
    ("combined", "Combined"),
    ("worst_case", "Worst-case"),
    ("strong", "Strong"),
]


def pct(x: Any) -> str:
    return f"{100 * float(x):.2f}" if isinstance(x, (int, float)) and not isinstance(x, bool) else DASH


def num(x: Any, digits: int = 4) -> str:
    return f"{float(x):.{digits}g}" if isinstance(x, (int, float)) and not isinstance(x, bool) else DASH


def fmt_eps(eps: Any, norm: str = "linf") -> str:
    if not isinstance(eps, (int, float)):
        return DASH
    if norm == "linf" and eps > 0 and abs(eps * 255 - round(eps * 255)) < 1e-6:
        return f"{round(eps * 255)}/255 (={eps:.5f})"
    return f"{eps:.4g}"


def fmt_threat(tm: dict[str, Any] | None) -> str:
    if not tm:
        return "unbounded"
    norm = tm.get("norm", "?")
    return (
        f"{'L-inf' if norm == 'linf' else 'L2' if norm == 'l2' else norm} eps={fmt_eps(tm.get('eps'), norm)}"
    )


def metrics_for(results: dict[str, Any], column: str) -> dict[str, Any] | None:
    """METRICS block for a Table 1 column (clean, an attack name, combined or worst_case)."""
    if column in ("clean", "combined", "worst_case"):
        return results.get(column)
    return (results.get("attacks") or {}).get(column)


def source_of(run: RunData, stage: StageData) -> str:
    r = stage.results or {}
    ck = r.get("checkpoint") or {}
    data = r.get("data") or {}
    sha = str(ck.get("sha256", ""))[:12]
    return (
        f"{run.rel(stage.results_path)} (checkpoint {ck.get('path', '?')} sha256 {sha or '?'}, "
        f"split {data.get('manifest', '?')}:{data.get('split', '?')} n={data.get('n', '?')}, "
        f"training config {stage.name}/config.yaml, evaluation config in results.json 'config')"
    )
