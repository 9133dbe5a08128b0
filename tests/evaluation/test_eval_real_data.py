"""evaluate_checkpoint on a small slice of the real IQ-OTH/NCCD test split (cheap settings)."""

from __future__ import annotations

import pytest
from fortify_eval_fixtures import _fit_head, eval_settings

from fortify.data import load_split, make_split, save_manifest
from fortify.evaluation import evaluate_checkpoint
from fortify.fileio import read_json
from fortify.models import build_model
from fortify.runtime import Runtime, seed_everything
from fortify.training.checkpoints import save_checkpoint, sha256_file

SIZE = 32


@pytest.mark.real_data
def test_evaluate_on_real_test_slice(real_data_path, cache_dir, tmp_path):
    manifest = tmp_path / "split.json"
    save_manifest(make_split(real_data_path, seed=0, image_size=SIZE, cache_dir=cache_dir), manifest)
    splits = load_split(manifest, real_data_path, image_size=SIZE, limit_per_class=20, cache_dir=cache_dir)
    train = splits["train"]
    assert train.classes == ["benign", "malignant", "normal"] and not train.synthetic
    seed_everything(0)
    model = build_model("smallcnn", 3)
    _fit_head(model, *train.tensors())
    info = {
        "model": "smallcnn",
        "num_classes": 3,
        "in_channels": 1,
        "image_size": SIZE,
        "classes": train.classes,
        "mode": "standard",
        "eps": 0.0,
        "epoch": 1,
        "split": {"manifest": str(manifest), "sha256": sha256_file(manifest)},
    }
    save_checkpoint(tmp_path / "best", model, info)

    results = evaluate_checkpoint(
        tmp_path / "best.safetensors",
        data=real_data_path,
        out_dir=tmp_path / "eval",
        settings=eval_settings(
            limit=12,
            attacks=["fgsm:eps=2/255", "pgd:eps=2/255,steps=3"],
            eps_curve=(0.0, 2 / 255),
            curve_attacks=("pgd:steps=2",),
            examples_per_class=1,
            sanity_steps_factor=2,
            sanity_restarts=1,
        ),
        runtime=Runtime.resolve("cpu", "fp32"),
        progress=False,
        cache_dir=cache_dir,
    )
    assert results["data"]["synthetic"] is False and results["data"]["manifest"] == str(manifest)
    assert results["data"]["n"] == 12 and results["data"]["root"] == str(real_data_path.resolve())
    assert all(results["clean"]["per_class"][c]["support"] == 4 for c in train.classes)
    assert "malignant_to_normal" in results
    assert results["worst_case"]["accuracy"] <= results["attacks"]["pgd"]["accuracy"]
    assert (tmp_path / "eval" / "results.json").is_file()
    # Patients: the scans the split kept together, named as the manifest names them.
    groups = {e["path"]: e["group"] for e in read_json(manifest)["splits"]["test"]}
    patient = results["patient"]
    assert patient["groups_from"] == "manifest" and results["per_sample"]["groups"] == [
        groups[p] for p in results["per_sample"]["paths"]
    ]
    assert [row["id"] for row in patient["per_patient"]] == sorted(set(results["per_sample"]["groups"]))
    assert all("/scan-" in row["id"] for row in patient["per_patient"])
    assert sum(row["n_slices"] for row in patient["per_patient"]) == 12  # --limit spreads over scans
    assert patient["joint"]["spec"].startswith("joint-pgd:eps=2/255")
