"""The attention shift summarised: bootstrap means per model (overall, per class, per attack outcome), the
paired difference between the two models on the same images, and the verdict sentence built from them."""

from __future__ import annotations

import numpy as np

from fortify.explain.settings import ExplainSettings
from fortify.explain.shift import bootstrap_mean, paired_difference

OUTCOMES = ("fooled", "resisted", "clean_error")


def shift_summaries(
    values: np.ndarray, labels: np.ndarray, outcome: np.ndarray, classes, seed, n_boot
) -> dict:
    return {
        "all": bootstrap_mean(values, seed=seed, n_boot=n_boot),
        "per_class": {
            c: bootstrap_mean(values[labels == i], seed=seed, n_boot=n_boot) for i, c in enumerate(classes)
        },
        "by_outcome": {o: bootstrap_mean(values[outcome == o], seed=seed, n_boot=n_boot) for o in OUTCOMES},
    }


def paired_summaries(
    normal: dict, adversarial: dict, labels: np.ndarray, classes: list[str], settings: ExplainSettings
) -> dict:
    """Adversarial minus normal model per test image: overall, per class, and on the images both models
    got right before and after the attack (there both maps explain the true class, so a difference is a
    move of attention, not a change of the class being explained)."""
    both = (normal["outcome"] == "resisted") & (adversarial["outcome"] == "resisted")
    kw = dict(seed=settings.seed, n_boot=settings.n_boot)
    out = {}
    for key, name in (("rho", "rank_correlation"), ("ovl", "top_overlap")):
        a, b = normal[key], adversarial[key]
        out[name] = {
            "all": paired_difference(a, b, **kw),
            "per_class": {
                c: paired_difference(a[labels == i], b[labels == i], **kw) for i, c in enumerate(classes)
            },
            "both_resisted": {
                **paired_difference(a[both], b[both], **kw),
                "normal": bootstrap_mean(a[both], **kw),
                "adversarial": bootstrap_mean(b[both], **kw),
            },
        }
    return out


def _fmt(summary: dict) -> str:
    if summary.get("mean") is None:
        return "n/a"
    ci = summary.get("ci")
    return f"{summary['mean']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def _fmt_diff(summary: dict) -> str:
    if summary.get("mean") is None:
        return "n/a"
    ci = summary.get("ci")
    return f"{summary['mean']:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")


def verdict(models: dict, paired: dict | None, top_fraction: float) -> str | None:
    """The answer to "does adversarial training keep attention under attack?", from the intervals."""
    if paired is None:
        return None
    d = paired["top_overlap"]["all"]
    top = f"top-{100 * top_fraction:g}% overlap"
    if d.get("ci") is None:
        answer = "too few images with non-constant maps to tell"
    elif d["ci"][0] > 0:
        answer = "adversarial training keeps attention closer to where it was on the clean scan"
    elif d["ci"][1] < 0:
        answer = "the adversarially trained model's attention moves more under attack than the normal model's"
    else:
        answer = (
            "no clear difference in attention shift between the two models (the paired interval covers 0)"
        )
    adv, nor = models["adversarial"], models["normal"]
    return (
        f"{answer}: {top} {_fmt(adv['top_overlap']['all'])} (adversarial) vs "
        f"{_fmt(nor['top_overlap']['all'])} (normal), paired difference {_fmt_diff(d)}; rank correlation "
        f"{_fmt(adv['rank_correlation']['all'])} vs {_fmt(nor['rank_correlation']['all'])}, "
        f"paired difference {_fmt_diff(paired['rank_correlation']['all'])}."
        + _same_class_sentence(paired, top)
    )


def _same_class_sentence(paired: dict, top: str) -> str:
    same = paired["top_overlap"].get("both_resisted")
    if not same or same.get("mean") is None:
        return ""
    return (
        f" On the {same['n']} images both models classified correctly before and after the attack (both maps "
        f"explain the true class), {top} {_fmt(same['adversarial'])} vs {_fmt(same['normal'])}, "
        f"paired difference {_fmt_diff(same)}; rank correlation paired difference "
        f"{_fmt_diff(paired['rank_correlation']['both_resisted'])}."
    )
