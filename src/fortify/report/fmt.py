"""Number formatting and provenance strings shared by the report's sections."""

from __future__ import annotations

from typing import Any

from fortify.report.run_files import RunData, StageData

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
    ("apgd", "L2 (APGD)"),
]


def pct(x: Any) -> str:
    return f"{100 * float(x):.2f}" if isinstance(x, (int, float)) and not isinstance(x, bool) else DASH


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def fmt_ci(ci: Any, digits: int = 1) -> str:
    """' [lo, hi]' in percent for a [lo, hi] fraction pair; '' when absent (older results.json)."""
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_is_num(v) for v in ci):
        return f" [{100 * ci[0]:.{digits}f}, {100 * ci[1]:.{digits}f}]"
    return ""


def pct_ci(m: dict[str, Any] | None, key: str = "accuracy", bound: bool = False) -> str:
    """'84.20 [77.6, 89.2]': m[key] in percent with m[key + '_ci'] when recorded; '≤' marks an upper
    bound (attack budget cut below full strength)."""
    if not m or not _is_num(m.get(key)):
        return DASH
    return ("≤" if bound else "") + pct(m[key]) + fmt_ci(m.get(f"{key}_ci"))


def fmt_p(p: Any) -> str:
    """A p-value: three decimals, scientific below 0.001 (an exact test can give tiny values)."""
    if not _is_num(p):
        return DASH
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def fmt_diff(d: Any, ci: Any) -> str:
    """A difference of accuracies in percentage points with its interval: '+12.3 [+4.1, +20.0]'."""
    if not _is_num(d):
        return DASH
    text = f"{100 * d:+.1f}"
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_is_num(v) for v in ci):
        text += f" [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]"
    return text


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
