"""run_certify end to end on a tiny checkpoint: outputs, noise fine-tuning, resume after an interruption."""

from __future__ import annotations

import math

import pytest
import torch

from fortify.certify import CertifySettings, images
from fortify.certify.run import run_certify, spread_subset
from fortify.data import ImageDataset
from fortify.errors import ConfigError
from fortify.fileio import read_json
from fortify.runtime import Runtime
from fortify.training import load_model

RUNTIME = Runtime.resolve("cpu", "fp32")


def _strip_timing(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


@pytest.mark.slow
def test_run_certify_fine_tunes_with_noise_and_writes_everything(
    tiny_checkpoint, tiny_settings, phantom, tmp_path
):
    s = tiny_settings(finetune_epochs=1, finetune_batch_size=16)
    payload = run_certify(tiny_checkpoint, None, data=phantom, out_dir=tmp_path, settings=s, runtime=RUNTIME)
    assert read_json(tmp_path / "certify.json")["per_image"] == payload["per_image"]
    assert (tmp_path / "figures" / "certified_accuracy.png").stat().st_size > 1000
    assert not (tmp_path / "certify.partial.json").exists()
    _, info = load_model(tmp_path / "noise-model" / "last.safetensors")
    assert info["mode"] == "noise" and info["config"]["noise_sigma"] == s.sigma
    assert info["config"]["init"] == str(tiny_checkpoint)
    assert payload["checkpoints"]["certified"].endswith("noise-model/last.safetensors")
    assert "fine-tuned 1 epoch" in payload["model"]["label"] and payload["finetune"]["epochs"] == 1
    n = payload["data"]["n"]
    assert n == len(payload["per_image"]) > 0
    tm = payload["threat_model"]
    assert tm["d"] == 32 * 32 and tm["l2_equivalent"] == pytest.approx(2 / 255 * 32)
    assert tm["l2_ball"] == pytest.approx(tm["l2_equivalent"] / 2)
    radii = [c["radius"] for c in payload["certified"]]
    assert radii == sorted({0.0, 0.2, tm["l2_ball"], tm["l2_equivalent"]})
    assert [e["radius"] for e in payload["empirical"]["at"]] == radii
    for c in payload["certified"]:
        assert c["n"] == n and (c["accuracy_ci"] is None or c["accuracy_ci"][0] <= c["accuracy"])
    accs = [p[1] for p in payload["curve"]["points"]]
    assert accs == sorted(accs, reverse=True) and accs[-1] == 0.0
    assert max(r["radius"] or 0 for r in payload["per_image"]) <= payload["max_certifiable_radius"] + 1e-12
    assert sum(pc["n"] for pc in payload["per_class"].values()) == n
    assert isinstance(payload["sanity"][0]["passed"], bool)
    cost = payload["cost"]
    assert cost["passes_per_image"]["certify_forward"] == s.n0 + s.n
    assert cost["seconds_per_image"]["certify"] > 0 and math.isfinite(cost["seconds"]["total_this_run"])


@pytest.mark.slow
def test_interrupted_run_resumes_from_its_units_exactly(
    tiny_checkpoint, tiny_settings, phantom, tmp_path, monkeypatch
):
    s = tiny_settings(limit=5)  # units of 2: [0, 2), [2, 4), [4, 5)
    reference = run_certify(
        tiny_checkpoint, None, data=phantom, out_dir=tmp_path / "a", settings=s, runtime=RUNTIME
    )
    assert reference["units"] == {"size": 2, "count": 3, "reused": 0, "processes": 1}
    assert not (tmp_path / "a" / "certify.partial.json").exists()

    real, calls = images.certify_batch, []

    def dies_in_second_unit(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt  # the run is killed during its second unit
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(images, "certify_batch", dies_in_second_unit)
    with pytest.raises(KeyboardInterrupt):
        run_certify(tiny_checkpoint, None, data=phantom, out_dir=tmp_path / "b", settings=s, runtime=RUNTIME)
    units = tmp_path / "b" / "units"
    assert sorted(p.name for p in units.glob("unit-*")) == ["unit-00000.safetensors"]
    assert not (tmp_path / "b" / "certify.json").exists()

    computed = []
    monkeypatch.setattr(images, "certify_batch", lambda *a, **k: computed.append(1) or real(*a, **k))
    resumed = run_certify(
        tiny_checkpoint, None, data=phantom, out_dir=tmp_path / "b", settings=s, runtime=RUNTIME, resume=True
    )
    assert resumed["units"]["reused"] == 1 and len(computed) == 2  # the finished unit was not redone
    assert _strip_timing(resumed["per_image"]) == _strip_timing(reference["per_image"])
    assert resumed["certified"] == reference["certified"] and resumed["empirical"] == reference["empirical"]

    # Units of another configuration: a one-line refusal naming the difference, nothing overwritten.
    before = {p.name: p.read_bytes() for p in units.iterdir()}
    with pytest.raises(ConfigError, match="seed differs"):
        run_certify(
            tiny_checkpoint,
            None,
            data=phantom,
            out_dir=tmp_path / "b",
            settings=tiny_settings(limit=5, seed=1),
            runtime=RUNTIME,
            resume=True,
        )
    # Without resume, finished units are not silently reused: refused, pointing at --resume.
    with pytest.raises(ConfigError, match="--resume"):
        run_certify(tiny_checkpoint, None, data=phantom, out_dir=tmp_path / "b", settings=s, runtime=RUNTIME)
    assert {p.name: p.read_bytes() for p in units.iterdir()} == before


def test_settings_are_validated_with_one_line_errors():
    with pytest.raises(ConfigError, match="sigma") as e:
        CertifySettings(sigma=0).validate()
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="valid: sigma"):
        CertifySettings.from_dict({"sigmaa": 0.5})
    quick = CertifySettings.preset("quick")
    assert CertifySettings.from_dict(quick.to_dict()) == quick
    with pytest.raises(ConfigError, match="adversarial"):
        run_certify(
            "x.safetensors",
            None,
            data="phantom",
            out_dir="/tmp/none",
            settings=CertifySettings(start_from="adversarial"),
        )
    with pytest.raises(ConfigError, match="adversarial"):  # a dict goes through CertifySettings.from_dict
        run_certify(
            "x.safetensors", None, data="phantom", out_dir="/tmp/none", settings={"start_from": "adversarial"}
        )


def test_spread_subset_is_stratified_and_spans_each_class():
    labels = [0] * 5 + [1] * 20 + [2] * 30
    ds = ImageDataset(
        images=torch.zeros(len(labels), 1, 8, 8, dtype=torch.uint8),
        labels=torch.tensor(labels),
        classes=["a", "b", "c"],
        paths=[f"p{i}" for i in range(len(labels))],
        file_hashes=[str(i) for i in range(len(labels))],
        root=None,
        image_size=8,
        synthetic=True,
    )
    sub = spread_subset(ds, 20)
    kept = [int(p[1:]) for p in sub.paths]
    assert len(kept) == len(set(kept)) == 20
    per = {c: [i for i in kept if labels[i] == c] for c in range(3)}
    assert [len(per[c]) for c in range(3)] == [5, 8, 7]  # round-robin quotas; the small class is taken whole
    assert per[1][0] == 5 and per[1][-1] == 24 and per[2][0] == 25 and per[2][-1] == 54  # first to last
    assert spread_subset(ds, None) is ds and spread_subset(ds, 100) is ds
