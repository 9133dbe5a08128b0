"""run_explain end to end on tiny phantom checkpoints, cross-architecture transfer, settings."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import PHANTOM

from fortify.attacks import parse_spec, run_attack
from fortify.errors import ConfigError
from fortify.evaluation.loading import open_checkpoint, open_test_set
from fortify.explain import ExplainSettings, run_explain
from fortify.explain.crossarch import transfer_to_targets
from fortify.fileio import read_json
from fortify.runtime import Runtime, seed_everything

FP32 = Runtime.resolve("cpu", "fp32")


@pytest.mark.slow
def test_explain_json_holds_every_number_and_the_figures(explained):
    payload, out = explained
    on_disk = read_json(out / "explain.json")
    assert on_disk["verdict"] == payload["verdict"]
    n = payload["data"]["n"]
    assert n == len(payload["data"]["paths"]) == len(payload["data"]["labels"]) >= 6
    assert payload["attack"]["spec"] == "pgd:eps=8/255,steps=3"
    assert payload["attack"]["threat_model"] == {"norm": "linf", "eps": pytest.approx(8 / 255)}
    assert set(payload["models"]) == {"normal", "adversarial"}
    for label, m in payload["models"].items():
        assert m["target_layer"] == payload["cam"]["layers"][label] == "net.features.2"
        per = m["per_image"]
        assert len(per["rank_correlation"]) == len(per["top_overlap"]) == len(per["adv_pred"]) == n
        finite = [v for v in per["top_overlap"] if v is not None]
        assert m["top_overlap"]["all"]["n"] == len(finite)
        assert m["top_overlap"]["all"]["mean"] == pytest.approx(sum(finite) / len(finite), abs=1e-4)
        lo, hi = m["top_overlap"]["all"]["ci"]
        assert 0 <= lo <= m["top_overlap"]["all"]["mean"] <= hi <= 1
        assert sum(m["outcome_counts"].values()) == n
        assert (
            sum(s["n"] for s in m["rank_correlation"]["per_class"].values())
            == m["rank_correlation"]["all"]["n"]
        )
        counts = m["outcome_counts"]
        assert m["clean"]["correct"] == counts["fooled"] + counts["resisted"]
    # The paired difference is the mean of per-image differences, adversarial minus normal.
    a = payload["models"]["normal"]["per_image"]["top_overlap"]
    b = payload["models"]["adversarial"]["per_image"]["top_overlap"]
    diffs = [y - x for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    assert payload["paired"]["top_overlap"]["all"]["mean"] == pytest.approx(sum(diffs) / len(diffs), abs=1e-4)
    assert f"{payload['paired']['top_overlap']['all']['mean']:+.2f}" in payload["verdict"]
    # ... and on the images both models got right before and after the attack.
    outcomes = zip(
        payload["models"]["normal"]["per_image"]["outcome"],
        payload["models"]["adversarial"]["per_image"]["outcome"],
        strict=True,
    )
    both = [i for i, (o, p) in enumerate(outcomes) if o == p == "resisted"]
    same = payload["paired"]["top_overlap"]["both_resisted"]
    kept = [b[i] - a[i] for i in both if a[i] is not None and b[i] is not None]
    assert same["n"] == len(kept)
    if kept:
        assert same["mean"] == pytest.approx(sum(kept) / len(kept), abs=1e-4)
        assert f"On the {same['n']} images both models" in payload["verdict"]
    for label, rel in payload["figures"].items():
        assert (out / rel).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", label
    assert len(payload["figure_images"]) == len(payload["data"]["classes"])
    for part in ("load", "normal_attack", "normal_cam", "adversarial_cam", "surrogate_training", "total"):
        assert payload["seconds"][part] >= 0, part


@pytest.mark.slow
def test_cross_architecture_transfer_is_reported_with_the_surrogates_accuracy(explained):
    payload, out = explained
    t = payload["transfer"]
    sur = t["surrogate"]
    assert sur["arch"] == "smallcnn" and sur["epochs"] == 1
    assert (out / "surrogate-smallcnn" / "best.safetensors").is_file()
    assert 0 <= t["surrogate_clean"]["accuracy"] <= 1 and t["surrogate_clean"]["n"] == payload["data"]["n"]
    assert set(t["targets"]) == {"normal", "adversarial"}
    for label, target in t["targets"].items():
        # White-box accuracy here is the same number the attention part measured on the same images.
        assert target["white_box"]["accuracy"] == pytest.approx(
            payload["models"][label]["adversarial"]["accuracy"]
        )
        assert target["clean"]["accuracy"] == pytest.approx(payload["models"][label]["clean"]["accuracy"])
        assert target["mean_abs_difference_to_white_box"] > 0
        assert target["sanity"]["check"] == "white-box no weaker than transfer"


def test_transfer_examples_are_crafted_on_the_surrogate(tiny_checkpoint):
    target, info = open_checkpoint(tiny_checkpoint)
    test = open_test_set(PHANTOM, info, tiny_checkpoint, limit=8)
    x, y = test.dataset.tensors()
    torch.manual_seed(5)
    # Another architecture (a two-layer conv net: the unit under test is the crafting, not the model).
    surrogate = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(3)
    )
    surrogate(x[:1])
    surrogate.eval()
    spec = parse_spec("pgd:eps=8/255,steps=3")
    seed_everything(0)
    white_box = run_attack(spec, target, x, y)
    out = transfer_to_targets(
        surrogate, x, y, spec=spec, targets={"t": (target, white_box)}, runtime=FP32, batch_size=4, seed=0
    )
    x_src = out["x_src"]
    seed_everything(0)
    on_surrogate = torch.cat(
        [run_attack(spec, surrogate, x[i : i + 4], y[i : i + 4]) for i in range(0, 8, 4)]
    )
    torch.testing.assert_close(x_src, on_surrogate)  # exactly what PGD on the surrogate gives
    assert (x_src - white_box).abs().max() > 1e-3  # not the white-box examples
    assert (x_src - x).abs().max() <= 8 / 255 + 1e-6
    with torch.no_grad():
        expected = float((surrogate(x).argmax(1) == y).double().mean())
        on_target = float((target(x_src).argmax(1) == y).double().mean())
    assert out["surrogate_clean"]["accuracy"] == pytest.approx(expected)
    assert out["targets"]["t"]["transfer"]["accuracy"] == pytest.approx(on_target)
    assert out["targets"]["t"]["mean_abs_difference_to_white_box"] == pytest.approx(
        float((x_src - white_box).abs().mean())
    )


@pytest.mark.slow
def test_single_checkpoint_gives_its_numbers_alone(tiny_checkpoint, tmp_path):
    settings = ExplainSettings(attack="pgd:eps=8/255,steps=2", limit=6, n_boot=100, surrogate="none")
    payload = run_explain(
        None, tiny_checkpoint, data=PHANTOM, out_dir=tmp_path, settings=settings, runtime=FP32
    )
    assert set(payload["models"]) == {"adversarial"}
    assert payload["paired"] is None and payload["verdict"] is None and payload["transfer"] is None
    assert payload["data"]["n"] == 6
    assert (tmp_path / payload["figures"]["adversarial"]).is_file()


@pytest.mark.slow
def test_true_class_target_and_other_method(tiny_checkpoint, tmp_path):
    settings = ExplainSettings(
        attack="pgd:eps=8/255,steps=2",
        limit=6,
        n_boot=100,
        surrogate="none",
        target="true",
        method="eigencam",
    )
    payload = run_explain(
        tiny_checkpoint, None, data=PHANTOM, out_dir=tmp_path, settings=settings, runtime=FP32
    )
    assert payload["cam"]["method"] == "eigencam" and "EigenCAM" in payload["cam"]["package"]
    assert payload["cam"]["target"] == "true"
    rho = [v for v in payload["models"]["normal"]["per_image"]["rank_correlation"] if v is not None]
    assert rho and all(-1 <= v <= 1 for v in rho) and not any(math.isnan(v) for v in rho)


def test_settings_validate_and_round_trip():
    for preset in (ExplainSettings.preset("smoke"), ExplainSettings.preset("quick")):
        assert ExplainSettings.from_dict(preset.to_dict()) == preset
    with pytest.raises(ConfigError) as e:
        ExplainSettings.from_dict({"methd": "gradcam"})
    assert "methd" in str(e.value) and "method" in str(e.value) and "surrogate_epochs" in str(e.value)
    for bad in ({"method": "cam"}, {"target": "other"}, {"surrogate": "vit"}, {"attack": "cw:steps=3"},
                {"top_fraction": 0.7}, {"limit": 1}):  # fmt: skip
        with pytest.raises(ConfigError):
            ExplainSettings(**bad).validate()
    assert ExplainSettings(surrogate="none").validate().surrogate == "none"
    with pytest.raises(ConfigError, match="unknown explain setting"):  # a dict goes through from_dict
        run_explain("x.safetensors", None, data="phantom", out_dir="/tmp/none", settings={"methd": "gradcam"})


def test_paired_numbers_and_verdict_on_hand_made_per_image_values():
    from fortify.explain.summaries import paired_summaries, shift_summaries, verdict

    labels = np.array([0, 0, 1, 1, 2, 2])
    outcome_n = np.array(["resisted", "fooled", "resisted", "fooled", "resisted", "clean_error"])
    outcome_a = np.array(["resisted", "resisted", "resisted", "resisted", "fooled", "clean_error"])
    normal = {"rho": np.array([0.9, 0.1, 0.8, 0.0, 0.7, 0.5]), "outcome": outcome_n}
    normal["ovl"] = normal["rho"] - 0.1
    adversarial = {"rho": np.array([1.0, 0.9, 0.9, 0.8, 0.2, 0.5]), "outcome": outcome_a}
    adversarial["ovl"] = adversarial["rho"] - 0.1
    settings = ExplainSettings(n_boot=200)
    paired = paired_summaries(normal, adversarial, labels, ["a", "b", "c"], settings)
    same = paired["top_overlap"]["both_resisted"]
    assert same["n"] == 2  # images 0 and 2
    assert same["mean"] == pytest.approx(0.1)
    assert same["normal"]["mean"] == pytest.approx(0.75) and same["adversarial"]["mean"] == pytest.approx(
        0.85
    )
    assert paired["rank_correlation"]["all"]["mean"] == pytest.approx(np.mean([0.1, 0.8, 0.1, 0.8, -0.5, 0]))
    assert paired["top_overlap"]["per_class"]["b"]["mean"] == pytest.approx(0.45)
    stats = dict(classes=["a", "b", "c"], seed=0, n_boot=200)
    models = {
        name: {k: shift_summaries(h[key], labels, h["outcome"], **stats) for key, k in
               (("rho", "rank_correlation"), ("ovl", "top_overlap"))}
        for name, h in (("normal", normal), ("adversarial", adversarial))
    }  # fmt: skip
    assert models["normal"]["top_overlap"]["by_outcome"]["fooled"]["n"] == 2
    text = verdict(models, paired, 0.1)
    assert "top-10% overlap" in text and "On the 2 images both models" in text
    lo, hi = paired["top_overlap"]["all"]["ci"]
    expected = "keeps attention" if lo > 0 else ("moves more" if hi < 0 else "no clear difference")
    assert expected in text
    assert verdict(models, None, 0.1) is None


def test_figure_rows_prefer_images_every_model_gets_right():
    from fortify.explain.run import figure_indices

    labels = np.array([0, 0, 0, 1, 1, 2])
    clean_ok = np.array([False, True, True, False, False, True])
    assert figure_indices(labels, clean_ok, 3, 2) == [1, 2, 3, 4, 5]
    assert figure_indices(labels, clean_ok, 3, 1) == [1, 3, 5]
    assert figure_indices(labels, clean_ok, 3, 0) == []
