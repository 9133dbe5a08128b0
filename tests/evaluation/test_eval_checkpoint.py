"""evaluate_checkpoint end to end on a tiny phantom model: schema, internal consistency, outputs."""

from __future__ import annotations

import pytest
import torch
from fortify_eval_fixtures import EPS, FAST_ATTACKS, FAST_EVAL, IMAGE_SIZE, PHANTOM, eval_settings
from safetensors.torch import load_file

from fortify.attacks import parse_spec
from fortify.errors import CheckpointError, ConfigError, SpecError
from fortify.evaluation import EvalSettings, add_transfer_checks, evaluate_checkpoint, evaluate_transfer
from fortify.evaluation.attack_set import for_evaluation
from fortify.evaluation.loading import check_out_dir
from fortify.fileio import read_json
from fortify.runtime import Runtime

RUNTIME = Runtime.resolve("cpu", "fp32")
METRIC_KEYS = {"accuracy", "balanced_accuracy", "n", "correct", "per_class", "confusion"}


@pytest.fixture(scope="module")
def evaluated(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    results = evaluate_checkpoint(
        tiny_checkpoint, data=PHANTOM, settings=FAST_EVAL, out_dir=out, runtime=RUNTIME, progress=False
    )
    return results, out


def _check_metrics(block: dict, n: int, classes: list[str]) -> None:
    assert METRIC_KEYS <= set(block)
    cm = torch.tensor(block["confusion"])
    assert cm.shape == (len(classes), len(classes))
    assert int(cm.sum()) == block["n"] == n
    assert block["correct"] == int(cm.diag().sum())
    assert block["accuracy"] == pytest.approx(int(cm.diag().sum()) / n)
    for k, name in enumerate(classes):
        assert block["per_class"][name]["support"] == int(cm[k].sum())


def test_results_file_matches_returned_dict_and_schema(evaluated):
    results, out = evaluated
    on_disk = read_json(out / "results.json")
    assert on_disk["format"] == "fortify-results/1"
    assert on_disk["attacks"].keys() == results["attacks"].keys() == {"fgsm", "pgd", "cw", "strong"}
    for key in (
        "checkpoint",
        "data",
        "runtime",
        "threat_model",
        "clean",
        "attacks",
        "combined",
        "worst_case",
        "malignant_to_normal",
        "curves",
        "sanity",
        "examples",
        "config",
        "seed",
        "created",
    ):
        assert key in on_disk, key
    assert on_disk["data"]["synthetic"] is True and on_disk["data"]["image_size"] == IMAGE_SIZE
    assert on_disk["threat_model"] == {"norm": "linf", "eps": pytest.approx(EPS)}
    assert on_disk["checkpoint"]["model"] == "smallcnn" and len(on_disk["checkpoint"]["sha256"]) == 64


def test_attack_cost_is_counted_per_attack_and_stage(evaluated):
    results, _ = evaluated
    n = results["data"]["n"]
    a = results["attacks"]
    # Only the images the clean model gets right are attacked (a misclassified one is fooled already).
    n_right = results["clean"]["correct"]
    assert 0 < n_right < n  # the fixture's model gets some wrong, so the test tells the two apart
    # FGSM: one gradient evaluation per attacked image (plus the verdict and scoring forwards)
    assert a["fgsm"]["gradient_evaluations"] == n_right and a["fgsm"]["forward_passes"] >= n
    # PGD-5 with early stopping: at least one gradient per attacked image, at most 5
    assert n_right <= a["pgd"]["gradient_evaluations"] <= 5 * n_right
    passes = results["passes"]
    assert passes["attacks"]["gradient_evaluations"] == sum(r["gradient_evaluations"] for r in a.values())
    assert passes["curves"]["gradient_evaluations"] > 0 and passes["sanity"]["gradient_evaluations"] > 0
    assert passes["total"]["gradient_evaluations"] == sum(
        passes[k]["gradient_evaluations"] for k in ("attacks", "curves", "sanity")
    )


def test_metrics_are_internally_consistent(evaluated):
    results, _ = evaluated
    n, classes = results["data"]["n"], results["data"]["classes"]
    _check_metrics(results["clean"], n, classes)
    assert results["clean"]["accuracy"] > 0.5  # the tiny model learned something: attacks are meaningful
    for key, res in results["attacks"].items():
        _check_metrics(res, n, classes)
        given = parse_spec(FAST_ATTACKS[list(results["attacks"]).index(key)])
        assert parse_spec(res["spec"]) == for_evaluation(given)  # the stored spec reproduces the run
        assert 0.0 <= res["success_rate"] <= 1.0 and res["seconds"] > 0
    worst = results["worst_case"]
    _check_metrics(worst, n, classes)
    assert worst["accuracy"] <= min(
        [results["clean"]["accuracy"]] + [r["accuracy"] for r in results["attacks"].values()]
    )
    comb = results["combined"]
    assert comb["attacks"] == ["fgsm", "pgd", "cw"]
    _check_metrics(comb, 3 * n, classes)
    assert comb["accuracy"] == pytest.approx(
        sum(results["attacks"][k]["accuracy"] for k in comb["attacks"]) / 3
    )
    m2n = results["malignant_to_normal"]
    mal, nor = classes.index("malignant"), classes.index("normal")
    assert m2n["clean"] == results["clean"]["confusion"][mal][nor]
    assert m2n["worst_case"] == worst["confusion"][mal][nor] >= max(m2n[k] for k in results["attacks"])


def test_attacks_stay_in_their_threat_model(evaluated):
    results, _ = evaluated
    for key in ("fgsm", "pgd", "strong"):
        res = results["attacks"][key]
        assert res["threat_model"] == {"norm": "linf", "eps": pytest.approx(EPS)}
        if res["perturbation"]["n_successful"]:
            assert res["perturbation"]["linf_median"] <= EPS + 1e-6
    cw = results["attacks"]["cw"]
    assert cw["threat_model"] == {"norm": "l2", "eps": 0.5} and cw["l2_budget"] == 0.5
    assert cw["cw_median_l2"] is None or cw["cw_median_l2"] > 0
    if cw["perturbation"]["n_successful"]:
        assert cw["perturbation"]["l2_mean"] <= 0.5 + 1e-4  # successes under the budget only


def test_curves_and_sanity_checks(evaluated):
    results, _ = evaluated
    curve = results["curves"]["pgd"]
    assert parse_spec(curve["spec"] + ",eps=1/255") == parse_spec("pgd:steps=3,early_stop=true,eps=1/255")
    assert curve["norm"] == "linf" and curve["attack"] == "pgd"
    assert [p[0] for p in curve["points"]] == pytest.approx([0.0, 4 / 255, 16 / 255])
    assert curve["points"][0][1] == pytest.approx(results["clean"]["accuracy"])
    assert curve["cumulative"] is True  # the default
    accs = [p[1] for p in curve["points"]]
    assert accs == sorted(accs, reverse=True)
    names = [c["check"] for c in results["sanity"]]
    assert "accuracy non-increasing in eps (pgd)" not in names  # cannot fail on a cumulative curve
    for expected in (
        "accuracy ~0 at a large eps",
        "pgd no weaker than fgsm",
        "strong no weaker than pgd",
        "random noise much weaker than the attack",
    ):
        assert expected in names
    for c in results["sanity"]:
        assert set(c) == {"check", "passed", "detail", "undermines"} and isinstance(c["passed"], bool)
        # "joint": the patient-level joint attack (results["patient"]["joint"]), checked against the slices'
        assert set(c["undermines"]) <= set(results["attacks"]) | {"joint"}
    # The checks really reflect the numbers they print.
    by_name = {c["check"]: c for c in results["sanity"]}
    acc = {k: r["accuracy"] for k, r in results["attacks"].items()}
    assert by_name["pgd no weaker than fgsm"]["passed"] == (acc["pgd"] <= acc["fgsm"] + 0.01)
    assert by_name["accuracy ~0 at a large eps"]["passed"] == (
        results["sanity_runs"]["large_eps"]["accuracy"] <= 0.05
    )


def test_cumulative_curve_attacks_only_the_survivors_of_the_previous_eps(tiny_checkpoint):
    """FGSM costs one gradient evaluation per attacked image, so the curve's count says exactly which
    images each eps attacked: cumulatively, those still robust at the previous eps; independently, every
    image the clean model gets right at every eps."""
    curve = {
        "curve_attacks": [parse_spec("fgsm", template=True)],
        "eps_curve": [0.0, 2 / 255, 4 / 255, 8 / 255],
    }
    runs = {
        cumulative: evaluate_checkpoint(
            tiny_checkpoint,
            data=PHANTOM,
            settings=FAST_EVAL.replace(curve_cumulative=cumulative, **curve),
            runtime=RUNTIME,
            progress=False,
        )
        for cumulative in (True, False)
    }
    cum, ind = runs[True], runs[False]
    n = cum["data"]["n"]
    points = cum["curves"]["fgsm"]["points"]
    robust_before = [round(acc * n) for _, acc in points[:-1]]  # clean, then each eps but the last
    assert cum["passes"]["curves"]["gradient_evaluations"] == sum(robust_before)
    assert ind["passes"]["curves"]["gradient_evaluations"] == 3 * ind["clean"]["correct"]
    assert sum(robust_before) < 3 * ind["clean"]["correct"]  # the saving is real on this model
    # FGSM is deterministic: a cumulative point is the independent one minus the images a smaller eps
    # fooled that this eps, attacked afresh, did not; never above it
    for (e1, a1), (e2, a2) in zip(points, ind["curves"]["fgsm"]["points"], strict=True):
        assert e1 == e2 and a1 <= a2
    assert ind["curves"]["fgsm"]["cumulative"] is False
    assert "accuracy non-increasing in eps (fgsm)" in [c["check"] for c in ind["sanity"]]
    # the headline numbers do not depend on how the curve was run
    assert cum["attacks"]["pgd"]["accuracy"] == ind["attacks"]["pgd"]["accuracy"]


def test_examples_file_has_every_attack(evaluated):
    results, out = evaluated
    ex = load_file(str(out / results["examples"]["file"]))
    idx = results["examples"]["indices"]
    k = len(idx)
    assert k == 2 * len(results["data"]["classes"])
    assert ex["clean"].shape == (k, 1, IMAGE_SIZE, IMAGE_SIZE) and ex["clean"].dtype == torch.float32
    assert ex["labels"].tolist() == sorted(ex["labels"].tolist())  # grouped by class
    for name in ("labels", "clean_pred", "clean_conf"):
        assert ex[name].shape == (k,)
    for a in results["examples"]["attacks"]:
        assert ex[f"adv.{a}"].shape == ex["clean"].shape
        assert ex[f"pred.{a}"].shape == (k,) and ((ex[f"conf.{a}"] > 0) & (ex[f"conf.{a}"] <= 1)).all()
        assert ex[f"adv.{a}"].min() >= 0 and ex[f"adv.{a}"].max() <= 1
    assert (ex["adv.pgd"] - ex["clean"]).abs().max() <= EPS + 1e-6


def test_limit_keeps_every_class_and_bad_specs_fail_before_work(tiny_checkpoint, tmp_path):
    # Attack text is parsed where a person writes it (here: when the settings are made), so a typo fails
    # there, naming the field, before any evaluation exists.
    with pytest.raises(SpecError, match="evaluate.attacks: pgd has no parameter 'stpes'"):
        EvalSettings(attacks=["pgd:eps=2/255,stpes=3"])
    with pytest.raises(SpecError, match="evaluate.curve_attacks"):
        EvalSettings(curve_attacks=["nosuch"])
    assert EvalSettings(attacks=["pgd:eps=2/255"]).attacks == [parse_spec("pgd:eps=2/255")]
    assert not (tmp_path / "o").exists()
    r = evaluate_checkpoint(
        tiny_checkpoint,
        data=PHANTOM,
        settings=eval_settings(
            attacks=["fgsm:eps=8/255"],
            eps_curve=(0.0,),
            curve_attacks=("pgd",),
            limit=4,
            examples_per_class=1,
        ),
        runtime=RUNTIME,
        progress=False,
    )
    assert r["data"]["n"] == 4
    assert all(r["clean"]["per_class"][c]["support"] >= 1 for c in r["data"]["classes"])
    assert "combined" in r and r["combined"]["attacks"] == ["fgsm"]


def test_mismatched_and_unsafe_checkpoints_are_refused(wrong_classes_checkpoint, tiny_checkpoint, tmp_path):
    with pytest.raises(CheckpointError, match="classes"):
        evaluate_checkpoint(wrong_classes_checkpoint, data=PHANTOM, out_dir=tmp_path / "o", progress=False)
    pt = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(1)}, pt)
    with pytest.raises(CheckpointError, match="safetensors"):
        evaluate_checkpoint(pt, data=PHANTOM, out_dir=tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "results.json").write_text("{}")
    with pytest.raises(ConfigError, match="another run"):
        check_out_dir(tmp_path / "full", force=False)
    check_out_dir(tmp_path / "full", force=True)


def test_transfer_between_two_checkpoints(tiny_checkpoint, tiny_checkpoint_b, evaluated):
    pair = evaluate_transfer(
        tiny_checkpoint_b,
        tiny_checkpoint,
        data=PHANTOM,
        settings=eval_settings(transfer_attack="pgd:eps=8/255,steps=3"),
        runtime=RUNTIME,
        source_name="b",
        target_name="a",
    )
    assert pair["source"] == "b" and pair["target"] == "a" and pair["n"] == 12
    # White-box may stop at the first success; crafting on the source must run every step.
    assert "early_stop=true" in pair["attack"] and "early_stop=false" in pair["craft_attack"]
    for key in ("transfer_accuracy", "white_box_accuracy", "clean_accuracy", "source_accuracy"):
        assert 0.0 <= pair[key] <= 1.0
    assert pair["sanity"]["passed"] == (pair["white_box_accuracy"] <= pair["transfer_accuracy"] + 0.01)
    assert pair["white_box_accuracy"] < pair["clean_accuracy"]  # the attack did something on the target

    # Attaching the pair to the target's results.json adds the white-box-vs-transfer check (once).
    _, out = evaluated
    n_before = len(read_json(out / "results.json")["sanity"])
    add_transfer_checks(out / "results.json", [pair])
    updated = add_transfer_checks(out / "results.json", [pair])
    assert len(updated["sanity"]) == n_before + 1
    check = updated["sanity"][-1]
    assert check["check"] == "white-box no weaker than transfer" and check["undermines"] == ["pgd"]
    assert check["passed"] == pair["sanity"]["passed"]


def test_other_split_warns_about_overlap_and_own_split_does_not(tiny_checkpoint, tmp_path):
    import warnings

    from fortify.data import DataWarning, make_split, save_manifest
    from fortify.evaluation.loading import open_checkpoint, open_test_set

    _, info = open_checkpoint(tiny_checkpoint)
    other = tmp_path / "other.json"
    save_manifest(make_split(PHANTOM, seed=1, image_size=IMAGE_SIZE), other)
    with pytest.warns(DataWarning, match="not the split"):
        open_test_set(PHANTOM, info, tiny_checkpoint, split=other)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        own = open_test_set(PHANTOM, info, tiny_checkpoint)  # the manifest recorded in the checkpoint JSON
    assert own.manifest is not None and own.manifest.endswith("split.json")
