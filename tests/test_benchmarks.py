"""Every script in benchmarks/ still imports and parses its command line.

The benchmarks are not run in CI (they time real work), so an API change in fortify can break one
silently: `benchmarks/training.py` imported a parser that had been removed, and nobody noticed until
it was run. Running each script's `--help` in-process catches that for the cost of the imports.
"""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py"))


def test_there_are_benchmarks() -> None:
    assert "attacks.py" in SCRIPTS and "evaluation.py" in SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_script_imports_and_prints_help(
    script: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", [script, "--help"])
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # scripts import their siblings (recipes -> ssl_pretrain)
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(BENCHMARKS / script), run_name="__main__")
    assert stop.value.code in (0, None)
    assert "usage:" in capsys.readouterr().out


def test_selection_rules_pick_their_epoch_and_cross_fit_scores_held_out_images(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    sel = runpy.run_path(str(BENCHMARKS / "selection.py"), run_name="selection")
    y = [0] * 2 + [1] * 9 + [2] * 9  # benign is the rare class 0
    calls_benign_normal = [2] * 2 + [1] * 9 + [2] * 9  # 90% accurate, benign never recognised
    balanced_but_worse = [0] * 2 + [1] * 7 + [2] * 2 + [2] * 7 + [1] * 2  # 80% accurate, every class recalled
    rec = {
        "classes": ["Benign", "Malignant", "Normal"],
        "val_y": y,
        "val_group": list(range(20)),
        "epochs": [
            {"epoch": 1, "val_pred": calls_benign_normal, "val_nll": [0.9] * 20},
            {"epoch": 2, "val_pred": balanced_but_worse, "val_nll": [0.8] * 20},
            {"epoch": 3, "val_pred": calls_benign_normal, "val_nll": [0.5] * 20},
        ],
    }
    every = list(range(20))
    assert sel["choose"]("accuracy", rec, every)["epoch"] == 3  # ties with epoch 1: the lower loss wins
    assert sel["choose"]("balanced", rec, every)["epoch"] == 2
    assert sel["choose"]("last", rec, every)["epoch"] == 3
    s = sel["_scores"](rec, rec["epochs"][1], "val", every)
    assert s["clean"] == pytest.approx(0.8) and s["benign"] == 1.0
    assert s["balanced"] == pytest.approx((1 + 7 / 9 + 7 / 9) / 3)
    metrics = [  # the training loop's own records: the test table follows its choice
        {"epoch": e, "val_loss": loss, "val_clean_acc": acc, "val_clean_bal_acc": bal, "val_robust_acc": None}
        for e, loss, acc, bal in ((1, 0.3, 0.9, 0.6), (2, 0.2, 0.8, 0.85), (3, 0.1, 0.9, 0.6))
    ]
    assert [sel["loop_choice"](r, rec, metrics)["epoch"] for r in ("accuracy", "balanced", "last")] == [
        3,
        2,
        3,
    ]
    fit = sel["cross_fit"](rec, repeats=3, seed=0)
    assert set(fit) == {"last", "accuracy", "balanced"}
    assert fit["last"]["benign"] == 0.0 and fit["balanced"]["benign"] > 0.5


def test_sentinel_pairs_adjacency_and_fold_analysis_agree_with_the_sentinel(tmp_path: Path) -> None:
    from fortify.data import load_dataset, make_folds, save_manifest
    from fortify.data.sentinel import leakage_sentinel
    from fortify.data.split import load_split

    sp = runpy.run_path(str(BENCHMARKS / "sentinel_pairs.py"), run_name="sentinel_pairs")
    assert sp["adjacent"](("m", 1, 10), ("m", 12, 20), 3)  # touching spans of one class folder
    assert sp["adjacent"](("m", 12, 20), ("m", 1, 10), 3)
    assert not sp["adjacent"](("m", 1, 10), ("m", 15, 20), 3)  # 5 numbers apart
    assert not sp["adjacent"](("m", 1, 10), ("n", 11, 20), 3)  # another class folder
    assert not sp["adjacent"](("m", 1, 10), ("m", 5, 20), 3)  # overlapping spans are not neighbours

    ds = load_dataset("phantom:n=30", image_size=32)
    path = save_manifest(make_folds(ds, 3, seed=0)[1], tmp_path / "fold-1.json")
    r = sp["analyse_fold"](ds, str(path), 3)
    parts = load_split(path, "phantom:n=30", image_size=32)
    assert r["sentinel"] == pytest.approx(leakage_sentinel(parts["train"], parts["test"])["accuracy"])
    assert r["n_test"] == len(parts["test"]) and r["n_train"] == len(parts["train"])
    assert 0 <= r["hits_from_adjacent_run"] <= r["nearest_from_adjacent_run"] <= r["n_test"]
    assert 0.0 <= r["sentinel_without_adjacent_runs"] <= 1.0
    assert sum(c["n"] for c in r["per_class"].values()) == r["n_test"]
    assert sum(c["sentinel_hits"] for c in r["per_class"].values()) == round(r["sentinel"] * r["n_test"])


def test_operating_point_cross_fit_scores_every_image_held_out_once_per_halving(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    op = runpy.run_path(str(BENCHMARKS / "operating_point.py"), run_name="operating_point")
    classes = ["benign", "malignant", "normal"]
    # Benign images rank above normal ones on the benign logit but never win: an offset of ~1 fixes them.
    rows = [[0.2, -3.0, 1.0]] * 6 + [[-1.0, -3.0, 1.0]] * 10 + [[-2.0, 2.0, 0.0]] * 10
    logits, y = torch.tensor(rows), torch.tensor([0] * 6 + [2] * 10 + [1] * 10)
    groups = [[i] for i in range(len(y))]
    res = op["cross_fit"](logits, y, groups, classes, repeats=3, seed=0)
    for variant in op["VARIANTS"]:
        assert res[variant]["benign_n"] == 3 * 6 and res[variant]["malignant_n"] == 3 * 10
    assert res["none"]["benign_hit"] == 0 and res["none"]["balanced"] == pytest.approx(2 / 3)
    assert res["benign"]["benign_hit"] == 3 * 6 and res["benign"]["accuracy"] == 1.0


def test_operating_point_ranking_auc_counts_ties_half(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    op = runpy.run_path(str(BENCHMARKS / "operating_point.py"), run_name="operating_point")
    classes = ["benign", "malignant", "normal"]
    # benign scores (benign - normal logit): 1, 0; normal scores: 0, -1 -> pairs 1>0, 1>-1, 0=0, 0>-1
    logits = torch.tensor(
        [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 5.0, 0.0]]
    )
    y = torch.tensor([0, 0, 2, 2, 1])
    assert op["ranking_auc"](logits, y, classes) == pytest.approx(3.5 / 4)
    assert op["ranking_auc"](logits[2:], y[2:], classes) is None


def test_learning_curve_fit_recovers_a_plateau_and_refuses_one_above_100_percent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    lc = runpy.run_path(str(BENCHMARKS / "learning_curve.py"), run_name="learning_curve")
    n = [15.0, 30.0, 45.0, 60.0]
    acc = [0.9 - 0.8 * x**-0.5 for x in n]  # plateau 90%
    fit = lc["fit_power_law"](n, acc)
    assert fit["identified"] and fit["plateau"] == pytest.approx(0.9, abs=0.01)
    assert acc[-1] < fit["at_2x"] < fit["at_4x"] < 0.9
    steep = [0.5 + 0.1 * i for i in range(4)]  # straight up: no plateau below 100% in sight
    assert not lc["fit_power_law"](n, steep)["identified"]
    rows = [
        {"fold": f, "train_scans": s, "clean": 0.5 + 0.05 * i}
        for f in (0, 1)
        for i, s in enumerate((8, 16, 32))
    ]
    slope = lc["per_doubling"](rows, "clean")
    assert slope["mean"] == pytest.approx(0.05) and slope["sd"] == pytest.approx(0.0)


def _append_rows(rows_path: str, worker: int, count: int) -> None:
    sys.path.insert(0, str(BENCHMARKS))
    recipes = runpy.run_path(str(BENCHMARKS / "recipes.py"), run_name="recipes")
    for i in range(count):
        recipes["append_row"](Path(rows_path), {"recipe": f"w{worker}", "fold": i})


def test_recipe_rows_from_two_processes_sharing_an_out_are_all_kept(tmp_path: Path) -> None:
    # Two comparisons (one per core) append to the same rows.json; without the lock and the re-read,
    # each process's rows loaded at start overwrite the other's.
    import multiprocessing

    rows_path = tmp_path / "rows.json"
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_append_rows, args=(str(rows_path), w, 25)) for w in (0, 1)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(120)
        assert p.exitcode == 0
    rows = json.loads(rows_path.read_text())
    want = sorted((f"w{w}", i) for w in (0, 1) for i in range(25))
    assert sorted((r["recipe"], r["fold"]) for r in rows) == want
