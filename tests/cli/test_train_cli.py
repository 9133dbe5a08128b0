"""`fortify train`: argument parsing, one-line errors for bad input, a tiny successful run."""

from __future__ import annotations

import json

import pytest

from fortify.cli import main
from fortify.fileio import read_json, read_yaml, write_json

TINY = [
    "--data",
    "phantom:n=12",
    "--model",
    "smallcnn",
    "--epochs",
    "1",
    "--image-size",
    "32",
    "--batch-size",
    "12",
    "--precision",
    "fp32",
    "--device",
    "cpu",
    "--attack-steps",
    "1",
    "--val-attack-steps",
    "1",
]


def _ok(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:  # typer's standalone mode exits 0 on success
        main(argv)
    assert exc.value.code in (0, None)


def _fails(capsys, argv: list[str], match: str) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fortify: error: ") and "\n" not in err and "Traceback" not in err, err
    assert match in err, err
    return err


def test_tiny_run_prints_json_summary(tmp_path, capsys):
    out = tmp_path / "run"
    _ok(["train", *TINY, "--mode", "pgd", "--eps", "8/255", "--out", str(out), "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["epochs_completed"] == 1 and summary["selection"] == "val_robust_acc"
    config = read_yaml(out / "config.yaml")
    assert config["eps"] == pytest.approx(8 / 255) and config["mode"] == "pgd"
    assert read_json(out / "best.json")["model"] == "smallcnn"


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--model", "vgg16"], "unknown model 'vgg16'"),
        (["--mode", "free"], "unknown mode 'free'"),
        (["--eps", "-2/255"], "eps must be >= 0"),
        (["--eps", "two"], "not a number"),
        (["--split", "missing.json"], "split manifest not found"),
        (["--weights", "missing.pth", "--model", "resnet18"], "weights file not found"),
    ],
)
def test_bad_input_is_one_line_error(tmp_path, capsys, extra, match):
    out = tmp_path / "run"
    argv = ["train", *TINY, "--out", str(out), *extra]
    _fails(capsys, argv, match)
    assert not (out / "last.json").exists()


def test_existing_run_with_other_config_is_refused_and_left_alone(tmp_path, capsys):
    out = tmp_path / "run"
    _ok(["train", *TINY, "--out", str(out), "--json"])
    capsys.readouterr()
    before = (out / "config.yaml").read_text(), (out / "best.safetensors").read_bytes()
    _fails(capsys, ["train", *TINY, "--mode", "fast", "--out", str(out)], "different run (mode")
    _fails(capsys, ["train", *TINY, "--out", str(out)], "--resume")
    assert ((out / "config.yaml").read_text(), (out / "best.safetensors").read_bytes()) == before
    _ok(["train", *TINY, "--out", str(out), "--resume", "--json"])  # already complete: nothing to redo
    assert json.loads(capsys.readouterr().out)["epochs_completed"] == 1


def test_manifest_from_another_dataset_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    _ok(["train", *TINY, "--out", str(out), "--json"])
    capsys.readouterr()
    manifest = read_json(out / "split.json")
    manifest["dataset"]["classes"] = ["cat", "dog", "fish"]
    write_json(tmp_path / "other.json", manifest)
    _fails(
        capsys,
        ["train", *TINY, "--split", str(tmp_path / "other.json"), "--out", str(tmp_path / "r2")],
        "another dataset",
    )


def test_split_given_trains_on_the_dataset_folders(tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    monkeypatch.setenv("FORTIFY_CACHE", str(tmp_path / "cache"))
    for k, part in enumerate(("train", "val", "test")):
        for c, name in enumerate(("a", "b", "c")):
            for i in range(4 if part == "train" else 2):
                path = tmp_path / "ds" / part / name / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                pixels = np.random.default_rng([k, c, i]).integers(0, 256, (16, 16), dtype=np.uint8)
                Image.fromarray(pixels).save(path)
    tiny = [*TINY, "--image-size", "16"]
    tiny[tiny.index("phantom:n=12")] = str(tmp_path / "ds")
    _ok(["train", *tiny, "--split", "given", "--out", str(tmp_path / "run")])
    manifest = read_json(tmp_path / "run" / "split.json")
    assert manifest["grouping"]["applied"] == "given"
    assert {e["path"].split("/")[0] for e in manifest["splits"]["test"]} == {"test"}
