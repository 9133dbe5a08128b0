"""Issue 32: the per-image files evaluation keeps (adversarial.safetensors, the unit files) and the
explorer built from them for an evaluate folder, a reproduce run and a cross-validated run."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluation"))
from fortify_eval_fixtures import FAST_EVAL, PHANTOM, tiny_checkpoint_path  # noqa: E402

from fortify.errors import ConfigError  # noqa: E402
from fortify.evaluation import evaluate_checkpoint  # noqa: E402
from fortify.fileio import read_json, write_json  # noqa: E402
from fortify.report.explorer import build_explorer, explorer_size  # noqa: E402
from fortify.report.explorer.records import load_evaluation  # noqa: E402
from fortify.report.explorer.sources import find_sources  # noqa: E402


def evaluate_tiny(factory) -> Path:
    """A real evaluation of the tiny phantom model (12 test images, fgsm/pgd/cw/strong), once a session."""
    out = factory.getbasetemp() / "explorer-eval" / "eval"
    if not (out / "results.json").is_file():
        ckpt = tiny_checkpoint_path(factory)
        evaluate_checkpoint(ckpt, data=PHANTOM, settings=FAST_EVAL, out_dir=out, progress=False, resume=True)
    return out


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> Path:
    return evaluate_tiny(tmp_path_factory)


def _tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def test_adversarial_file_holds_every_images_worst_case(evaluated):
    t, meta = _tensors(evaluated / "adversarial.safetensors")
    results = read_json(evaluated / "results.json")
    attacks = list(results["attacks"])
    n, size = results["data"]["n"], results["data"]["image_size"]
    assert meta["format"] == "fortify-adversarial/1" and meta["attacks"] == '["fgsm", "pgd", "cw", "strong"]'
    assert t["adv"].dtype == torch.uint8 and tuple(t["adv"].shape) == (n, 1, size, size)
    assert t["clean"].dtype == torch.uint8 and tuple(t["clean"].shape) == (n, 1, size, size)
    correct = results["per_sample"]["correct"]
    for i in range(n):
        fooled = [k for k, a in enumerate(attacks) if correct["clean"][i] and not correct[a][i]]
        assert int(t["first_fooled"][i]) == (fooled[0] if fooled else -1), i
        if not correct["clean"][i]:  # never attacked: its "adversarial" image is the clean one
            assert torch.equal(t["adv"][i], t["clean"][i])
        for a in attacks:
            assert int(t[f"pred.{a}"][i] == t["labels"][i]) == correct[a][i]
    assert (t["first_fooled"] >= 0).any() and not torch.equal(t["adv"], t["clean"])
    assert t["cw_l2.cw"].shape == (n,) and t["prob.clean"].shape == (n, 3)


def test_unit_files_keep_the_worst_case_images(evaluated):
    """resume and torchrun join units: each unit file carries its images' worst-case images."""
    t, _ = _tensors(sorted((evaluated / "units").glob("unit-*.safetensors"))[0])
    assert t["adversarial.image"].dtype == torch.uint8 and t["adversarial.first"].dtype == torch.int64


def test_a_resumed_evaluation_writes_the_same_adversarial_file(tmp_path_factory, tmp_path):
    """Units of 4 images; two of three unit files kept, the rest redone by --resume: the same file."""
    ckpt, settings = tiny_checkpoint_path(tmp_path_factory), FAST_EVAL.replace(unit_size=4)
    first, again = tmp_path / "first", tmp_path / "again"
    evaluate_checkpoint(ckpt, data=PHANTOM, settings=settings, out_dir=first, progress=False)
    shutil.copytree(first / "units", again / "units")
    (again / "units" / "unit-00001.safetensors").unlink()
    evaluate_checkpoint(ckpt, data=PHANTOM, settings=settings, out_dir=again, progress=False, resume=True)
    a, _ = _tensors(first / "adversarial.safetensors")
    b, _ = _tensors(again / "adversarial.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def study_run(tmp_path: Path, evaluated: Path, *, fold: int | None = None, groups: bool = False) -> Path:
    """A reproduce run (or one fold of a CV run) whose two models are copies of the one evaluation."""
    root = tmp_path if fold is None else tmp_path / f"fold-{fold}"
    for model in ("normal", "adversarial"):
        shutil.copytree(evaluated, root / model / "eval", ignore=shutil.ignore_patterns("units", "explorer"))
        if groups:
            r = read_json(root / model / "eval" / "results.json")
            r["per_sample"]["groups"] = [f"patient-{i // 2}" for i in range(r["data"]["n"])]
            write_json(root / model / "eval" / "results.json", r)
    return tmp_path


def test_explorer_of_an_evaluate_folder(evaluated, tmp_path):
    index = build_explorer(evaluated, out=tmp_path / "explorer")
    assert index == tmp_path / "explorer" / "index.html"
    names = {p.name for p in index.parent.iterdir()}
    assert {"index.html", "explorer.js", "explorer.css", "data.js", "thumbs"} <= names
    n = read_json(evaluated / "results.json")["data"]["n"]
    assert len(list((index.parent / "thumbs").glob("*.png"))) == 3 * n  # clean, adversarial, perturbation
    assert explorer_size(index.parent) < 30e6
    text = (index.parent / "data.js").read_text()
    assert text.startswith("window.FORTIFY_EXPLORER = {")
    for page in ("index.html", "explorer.js", "explorer.css"):  # nothing fetched from elsewhere
        assert "http://" not in (index.parent / page).read_text() and "https://" not in text


def test_explorer_of_a_reproduce_run_with_patients_and_certify(evaluated, tmp_path):
    run = study_run(tmp_path / "run", evaluated, groups=True)
    paths = read_json(evaluated / "results.json")["per_sample"]["paths"]
    record = {"path": paths[0], "radius": 0.25, "prediction": 0}
    write_json(run / "certify" / "certify.json", {"model": {"label": "noise model"}, "per_image": [record]})
    kind, sources = find_sources(run)
    assert kind == "reproduce" and [s.model for s in sources] == ["normal", "adversarial"]
    ev = load_evaluation(sources[0])
    assert ev.groups[:3] == ["patient-0", "patient-0", "patient-1"] and paths[0] in ev.certified
    index = build_explorer(run)
    assert index == run.resolve() / "explorer" / "index.html"
    thumbs = index.parent / "thumbs"
    assert len(list(thumbs.glob("*.png"))) == 5 * len(paths)  # one clean, two per model
    assert (thumbs / "0.normal.a.png").is_file() and (thumbs / "0.adversarial.p.png").is_file()


def test_explorer_of_a_cv_run_covers_every_fold(evaluated, tmp_path):
    for fold in (0, 1):
        study_run(tmp_path / "cv", evaluated, fold=fold)
    kind, sources = find_sources(tmp_path / "cv")
    assert kind == "cv" and [(s.fold, s.model) for s in sources] == [
        (0, "normal"),
        (0, "adversarial"),
        (1, "normal"),
        (1, "adversarial"),
    ]
    index = build_explorer(tmp_path / "cv")
    n = read_json(evaluated / "results.json")["data"]["n"]
    assert len(list((index.parent / "thumbs").glob("*.c.png"))) == 2 * n


def test_explorer_refuses_a_folder_without_an_evaluation(tmp_path, evaluated):
    with pytest.raises(ConfigError):
        build_explorer(tmp_path)
    assert build_explorer(tmp_path, missing_ok=True) is None
    old = tmp_path / "old"
    shutil.copytree(evaluated, old, ignore=shutil.ignore_patterns("units", "adversarial.safetensors"))
    with pytest.raises(ConfigError, match="adversarial.safetensors"):
        build_explorer(old)
    assert build_explorer(old, missing_ok=True) is None  # the report stage of a run evaluated earlier


def test_explore_command(evaluated, tmp_path, capsys, cli):
    out = tmp_path / "x"
    assert cli(["explore", str(evaluated), "--out", str(out)]) == 0 and (out / "index.html").is_file()
    assert "explorer:" in capsys.readouterr().out
    assert cli(["explore", str(tmp_path / "empty")]) == 2
    assert capsys.readouterr().err.startswith("fortify: error:")


def test_explorer_draws_the_cams_explain_kept(evaluated, tmp_path):
    from types import SimpleNamespace

    import numpy as np

    from fortify.explain.cam_file import write_cams

    run = study_run(tmp_path / "run", evaluated)
    paths = read_json(evaluated / "results.json")["per_sample"]["paths"]
    size = read_json(evaluated / "results.json")["data"]["image_size"]
    maps = np.linspace(0, 1, 2 * size * size, dtype=np.float32).reshape(2, size, size)
    held = {"normal": SimpleNamespace(cam_clean=maps, cam_adv=maps[::-1])}
    write_cams(run / "explain" / "cams.safetensors", paths[:2], held)
    explain = {
        "attack": {"spec": "pgd:eps=2/255,steps=3"},
        "data": {"paths": paths[:2]},
        "models": {"normal": {"per_image": {"rank_correlation": [0.5, None]}}},
    }
    write_json(run / "explain" / "explain.json", explain)
    thumbs = build_explorer(run).parent / "thumbs"
    assert sorted(p.name for p in thumbs.glob("*.c?.png")) == [
        "0.normal.ca.png",
        "0.normal.cc.png",
        "1.normal.ca.png",
        "1.normal.cc.png",
    ]
    data = (thumbs.parent / "data.js").read_text()
    assert '"cam":1' in data and '"rho":0.5' in data and '"cam":true' in data
