"""`fortify attack`: adversarial PNGs at the model input size and per-image results."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluation"))
from fortify_eval_fixtures import IMAGE_SIZE, PHANTOM, tiny_checkpoint_path  # noqa: E402

from fortify.cli import main  # noqa: E402
from fortify.fileio import read_json  # noqa: E402


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    return tiny_checkpoint_path(tmp_path_factory)


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def test_attack_writes_pngs_and_per_image_json(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "adv"
    code, stdout, err = run(
        [
            "attack",
            "--checkpoint",
            str(tiny_checkpoint),
            "--data",
            PHANTOM,
            "--attack",
            "pgd:eps=8/255,steps=3",
            "--out",
            str(out),
            "--limit",
            "6",
            "--precision",
            "fp32",
        ],
        capsys,
    )
    assert code == 0, err
    summary = read_json(out / "attacks.json")
    assert summary["data"]["n"] == 6 and len(summary["images"]) == 6
    assert summary["threat_model"] == {"norm": "linf", "eps": pytest.approx(8 / 255)}
    n_correct = sum(r["clean_pred"] == r["label"] for r in summary["images"])
    n_fooled = sum(r["success"] for r in summary["images"])
    assert summary["success_rate"] == pytest.approx(n_fooled / n_correct)
    for r in summary["images"]:
        assert set(r) >= {"path", "label", "clean_pred", "adv_pred", "success", "l2", "linf", "png"}
        assert r["linf"] <= 8 / 255 + 1e-6
        assert r["success"] == (r["clean_pred"] == r["label"] and r["adv_pred"] != r["label"])
        with Image.open(out / r["png"]) as png:
            assert png.mode == "L" and png.size == (IMAGE_SIZE, IMAGE_SIZE)
        # 8-bit rounding moves a pixel by at most half a level beyond the attack's own budget.
        assert r["linf"] * 255 <= 8 + 1e-4
    assert len(list((out / "images").glob("*.png"))) == 6
    assert "success" in stdout


def test_attack_refuses_bad_spec_and_existing_out(tiny_checkpoint, tmp_path, capsys):
    code, _, err = run(
        [
            "attack",
            "--checkpoint",
            str(tiny_checkpoint),
            "--data",
            PHANTOM,
            "--attack",
            "pgd:eps=x",
            "--out",
            str(tmp_path / "a"),
        ],
        capsys,
    )
    assert code != 0 and err.startswith("fortify: error: ") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "a").exists()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "attacks.json").write_text("{}")
    code, _, err = run(
        [
            "attack",
            "--checkpoint",
            str(tiny_checkpoint),
            "--data",
            PHANTOM,
            "--attack",
            "fgsm:eps=2/255",
            "--out",
            str(tmp_path / "b"),
        ],
        capsys,
    )
    assert code != 0 and "another run" in err
    assert np.array_equal(
        np.frombuffer((tmp_path / "b" / "attacks.json").read_bytes(), np.uint8),
        np.frombuffer(b"{}", np.uint8),
    )
