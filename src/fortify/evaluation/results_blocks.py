"""results.json's blocks, built from an evaluation's outcomes (layout: docs/results-schema.md)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from fortify import __version__
from fortify.attacks import AttackSpec
from fortify.data.sentinel import sentinel_warning
from fortify.evaluation.attack_runs import AttackOutcome
from fortify.evaluation.attack_set import (
    COMBINED_ATTACKS,
    FULL_STRENGTH,
    STRONG_DEFAULTS,
    threat_model_dict,
)
from fortify.evaluation.loading import checkpoint_record
from fortify.evaluation.metrics import (
    INTERVAL,
    classification_metrics,
    worst_case_predictions,
)
from fortify.models.contract import ContractModel

if TYPE_CHECKING:
    from fortify.evaluation.evaluate import LoadedEvaluation

RESULTS_FORMAT = "fortify-results/1"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def harmful_pair(classes: Sequence[str]) -> tuple[int, int] | None:
    """(malignant, normal) indices: the mistake that sends a cancer patient home."""
    if "malignant" in classes and "normal" in classes:
        return classes.index("malignant"), classes.index("normal")
    return None


def count_pair(labels: torch.Tensor, preds: torch.Tensor, pair: tuple[int, int]) -> int:
    return int(((labels == pair[0]) & (preds == pair[1])).sum())


def opening_blocks(
    ev: LoadedEvaluation,
    checkpoint: str | Path | ContractModel,
    eps: float,
    seed: int,
    clean_pred: torch.Tensor,
    outcomes: dict[str, AttackOutcome],
) -> dict:
    """results.json's opening blocks: what was evaluated and how, the clean and attacked numbers."""
    ds, test = ev.test.dataset, ev.test
    results: dict = {
        "format": RESULTS_FORMAT,
        "fortify_version": __version__,
        "created": _now(),
        "seed": seed,
        "checkpoint": checkpoint_record(checkpoint, ev.info),
        "data": {
            "root": ds.root,
            "manifest": test.manifest,
            "split_seed": test.split_seed,
            "split": "test",
            "n": len(ds),
            "classes": ev.classes,
            "image_size": ds.image_size,
            "synthetic": bool(ds.synthetic),
        },
        "runtime": {
            **ev.runtime.describe(),
            "score_precision": ev.score_rt.precision,
            "batchnorm_folded": ev.fold_bn,
        },
        "threat_model": headline_threat_model(ev.specs, eps),
        "interval": dict(INTERVAL),
        "budget": headline_budget(ev.specs, len(ev.classes)),
        "clean": classification_metrics(ev.y, clean_pred, ev.classes),
        "attacks": {key: outcome.entry for key, outcome in outcomes.items()},
    }
    sentinel = test.sentinel
    if sentinel:
        clean_acc = results["clean"]["accuracy"]
        results["leakage_sentinel"] = {
            **sentinel,
            "model_clean_accuracy": clean_acc,
            "evaluated_n": len(ds),
            "warning": sentinel_warning(
                sentinel,
                clean_acc,
                {cls: m["sensitivity"] for cls, m in results["clean"]["per_class"].items()},
            ),
        }
    return results


def worst_case_blocks(
    ev: LoadedEvaluation, clean_pred: torch.Tensor, outcomes: dict[str, AttackOutcome]
) -> tuple[dict, torch.Tensor]:
    """The combined, worst_case and malignant_to_normal blocks, and the worst-case predictions."""
    y, classes = ev.y, ev.classes
    adv_preds = {key: outcome.pred for key, outcome in outcomes.items()}
    blocks: dict = {}
    combined_keys = [k for k, s in ev.specs.items() if s.name in COMBINED_ATTACKS]
    if combined_keys:
        pooled_y = y.repeat(len(combined_keys))
        pooled_pred = torch.cat([adv_preds[k] for k in combined_keys])
        blocks["combined"] = {
            "attacks": combined_keys,
            **classification_metrics(pooled_y, pooled_pred, classes),
        }
    harmful = harmful_pair(classes)
    worst = worst_case_predictions(y, clean_pred, [adv_preds[k] for k in ev.specs], harmful)
    blocks["worst_case"] = {"attacks": list(ev.specs), **classification_metrics(y, worst, classes)}
    if harmful is not None:
        blocks["malignant_to_normal"] = {
            "clean": count_pair(y, clean_pred, harmful),
            **{k: count_pair(y, adv_preds[k], harmful) for k in ev.specs},
            "worst_case": count_pair(y, worst, harmful),
        }
    return blocks, worst


def passes_block(outcomes: dict[str, AttackOutcome], curve_passes: dict, sanity_passes: dict) -> dict:
    """Images through the model per stage (the headline attacks, the curves, the sanity checks) and in all."""
    attack_passes = {
        k: sum(o.entry[k] for o in outcomes.values()) for k in ("gradient_evaluations", "forward_passes")
    }
    stage_passes = {"attacks": attack_passes, "curves": curve_passes, "sanity": sanity_passes}
    return {
        **stage_passes,
        "total": {k: sum(v[k] for v in stage_passes.values()) for k in attack_passes},
        "unit": "images through the model (a batch of 64 counts 64)",
    }


def per_sample_block(
    ev: LoadedEvaluation, clean_pred: torch.Tensor, outcomes: dict[str, AttackOutcome], worst: torch.Tensor
) -> dict:
    """Each test image's path and whether it was classified correctly, clean and under each attack."""
    y = ev.y
    return {
        "paths": list(ev.test.dataset.paths),
        "correct": {
            "clean": (clean_pred == y).int().tolist(),
            **{k: (outcomes[k].pred == y).int().tolist() for k in ev.specs},
            "worst_case": (worst == y).int().tolist(),
        },
    }


def headline_threat_model(specs: dict[str, AttackSpec], eps: float) -> dict:
    """The strong attack's budget if given, else the first L-inf attack's, else the eps argument."""
    ordered = sorted(specs.values(), key=lambda s: s.name != "strong")
    for spec in ordered:
        tm = threat_model_dict(spec)
        if tm is not None and tm["norm"] == "linf":
            return tm
    return {"norm": "linf", "eps": float(eps)}


def headline_budget(specs: dict[str, AttackSpec], n_classes: int | None = None) -> dict:
    """Whether the headline `strong` attack runs at AutoAttack-standard budgets (APGD 100 steps, every
    other class targeted, Square 5000 queries). If not, its robust accuracies are upper bounds."""
    strong_specs = [s for s in specs.values() if s.name == "strong"]
    if not strong_specs:
        return {
            "full_strength": False,
            "note": "no strong (AutoAttack-style) attack was run: robust "
            "accuracies are upper bounds from weaker attacks",
        }
    params = {**STRONG_DEFAULTS, **strong_specs[0].params}
    cuts = [
        f"{name} {params[name]} < {standard}"
        for name, standard in FULL_STRENGTH.items()
        if float(params.get(name, 0)) < standard
    ]
    if not cuts:
        return {
            "full_strength": True,
            "note": "AutoAttack-standard budgets: " + _budget_text(params, n_classes),
        }
    return {
        "full_strength": False,
        "note": f"budgets cut ({', '.join(cuts)}): robust accuracies are upper bounds; "
        + _budget_text(params, n_classes),
    }


def _budget_text(params: dict, n_classes: int | None = None) -> str:
    # Targeted APGD attacks the top other classes, at most n_target_classes of them: with the class count
    # known, say how many that is here ("2 other classes" with 3 classes, not "up to 9").
    n = int(params["n_target_classes"])
    targeted = f"up to {n} classes" if n_classes is None else f"{min(n, n_classes - 1)} other class(es)"
    return (
        f"{params['version']} component set, APGD {params['steps']} steps x {params['restarts']} "
        f"restart(s), targeted on {targeted}, Square {params['square_queries']} queries"
    )
