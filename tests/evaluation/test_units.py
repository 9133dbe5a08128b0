"""Work units: evaluation cut into fixed slices of the test set, resumed exactly after a SIGKILL, and
shared out among torchrun processes with the same per-image outcome as one process.

The checkpoint is a smallcnn (linear probe on random features, seconds) on the real data at 32 px; the
test set is limited to 13 images with units of 4, so neither the world size (2) nor the unit size
divides it. The attacks include the randomized ones (PGD's random start, Square inside `strong`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fortify_eval_fixtures import _fit_head

from fortify.data import load_split, make_split, save_manifest
from fortify.errors import ConfigError
from fortify.evaluation.units import UnitStore, assigned_units, unit_seed, unit_slices
from fortify.fileio import read_json
from fortify.models import build_model
from fortify.runtime import seed_everything
from fortify.training.checkpoints import save_checkpoint, sha256_file

SIZE = 32
ROOT = Path(__file__).resolve().parents[2]
EVAL_ARGS = [
    "--limit", "13", "--unit-size", "4", "--examples-per-class", "1", "--precision", "fp32",
    "--attacks", "fgsm:eps=8/255",
    "--attacks", "pgd:eps=8/255,steps=4,restarts=2",
    "--attacks", "strong:eps=8/255,steps=3,square_queries=30",
    "--attacks", "cw:steps=8,binary_steps=2,max_l2=0.5",
    "--curve-attack", "pgd:steps=2", "--eps-curve", "0,2/255,8/255",
]  # fmt: skip


def test_units_depend_on_the_test_set_and_unit_size_only():
    units = unit_slices(13, 4)
    assert [(u.start, u.stop) for u in units] == [(0, 4), (4, 8), (8, 12), (12, 13)]
    for world in (1, 2, 3, 5):
        shares = [assigned_units(len(units), r, world) for r in range(world)]
        assert sorted(i for share in shares for i in share) == list(range(len(units)))  # once each
    assert unit_seed(0, "attack pgd", 1) == unit_seed(0, "attack pgd", 1)
    assert (
        len({unit_seed(0, "attack pgd", 1), unit_seed(0, "attack pgd", 2), unit_seed(1, "attack pgd", 1)})
        == 3
    )


def test_a_units_folder_of_another_configuration_is_refused(tmp_path):
    store = UnitStore.open(tmp_path / "units", {"checkpoint": "a", "seed": 0}, resume=False)
    store.claim()
    (tmp_path / "units" / "unit-00000.safetensors").write_bytes(b"kept")
    with pytest.raises(ConfigError, match="checkpoint differs"):
        UnitStore.open(tmp_path / "units", {"checkpoint": "b", "seed": 0}, resume=True)
    with pytest.raises(ConfigError, match="--resume"):
        UnitStore.open(tmp_path / "units", {"checkpoint": "a", "seed": 0}, resume=False)
    assert (tmp_path / "units" / "unit-00000.safetensors").read_bytes() == b"kept"


@pytest.fixture(scope="module")
def real_checkpoint(real_data_path, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("units_ckpt")
    cache = tmp / "cache"
    manifest = tmp / "split.json"
    save_manifest(make_split(real_data_path, seed=0, image_size=SIZE, cache_dir=cache), manifest)
    train = load_split(manifest, real_data_path, image_size=SIZE, limit_per_class=20, cache_dir=cache)[
        "train"
    ]
    seed_everything(0)
    model = build_model("smallcnn", 3)
    _fit_head(model, *train.tensors())
    info = {
        "model": "smallcnn", "num_classes": 3, "in_channels": 1, "image_size": SIZE,
        "classes": train.classes, "mode": "standard", "eps": 0.0, "epoch": 1,
        "split": {"manifest": str(manifest), "sha256": sha256_file(manifest)},
    }  # fmt: skip
    save_checkpoint(tmp / "best", model, info)
    return tmp / "best.safetensors", manifest, real_data_path


def _env() -> dict[str, str]:
    src = str(ROOT / "src")
    return {
        **os.environ,
        "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "FORTIFY_THREADS": "1",
    }


def _evaluate(ckpt, manifest, data, out: Path, *extra: str, nproc: int = 1) -> subprocess.CompletedProcess:
    args = [
        "evaluate",
        "--checkpoint",
        str(ckpt),
        "--data",
        str(data),
        "--split",
        str(manifest),
        "--out",
        str(out),
    ]
    if nproc == 1:
        cmd = [sys.executable, "-m", "fortify", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
               "--master-port", "29517", "-m", "fortify", *args]  # fmt: skip
    return subprocess.run([*cmd, *EVAL_ARGS, *extra], capture_output=True, text=True, env=_env(), timeout=900)


def _per_image(results: dict) -> dict:
    """What must not depend on processes or interruptions: every per-image outcome and verdict."""
    return {
        "per_sample": results["per_sample"],
        "accuracies": {k: a["accuracy"] for k, a in results["attacks"].items()},
        "strong_budget": results["budget"],
        "curves": results["curves"],
        "sanity": [(c["check"], c["passed"], c["detail"]) for c in results["sanity"]],
        "sanity_runs": {k: v["accuracy"] for k, v in results["sanity_runs"].items()},
        "cw": results["attacks"]["cw"]["cw_median_l2"],
        "worst_case": results["worst_case"]["accuracy"],
    }


@pytest.mark.real_data
@pytest.mark.slow
def test_two_processes_equal_one_and_a_killed_run_resumes_exactly(real_checkpoint, tmp_path):
    ckpt, manifest, data = real_checkpoint
    one = _evaluate(ckpt, manifest, data, tmp_path / "one")
    assert one.returncode == 0, one.stderr
    single = read_json(tmp_path / "one" / "results.json")
    assert single["data"]["n"] == 13 and single["units"] == {
        "size": 4,
        "count": 4,
        "reused": 0,
        "processes": 1,
    }

    two = _evaluate(ckpt, manifest, data, tmp_path / "two", nproc=2)
    assert two.returncode == 0, two.stderr
    double = read_json(tmp_path / "two" / "results.json")
    assert double["units"]["processes"] == 2
    assert _per_image(double) == _per_image(single)

    # SIGKILL once the first unit is on disk, then --resume: the finished units are reused, not redone.
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "fortify", "evaluate", "--checkpoint", str(ckpt), "--data", str(data),
           "--split", str(manifest), "--out", str(out), *EVAL_ARGS]  # fmt: skip
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not list((out / "units").glob("unit-*.safetensors")) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len(list((out / "units").glob("unit-*.safetensors")))
    assert 1 <= finished < 4 and not (out / "results.json").exists()
    resumed = _evaluate(ckpt, manifest, data, out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    again = read_json(out / "results.json")
    assert again["units"]["reused"] == finished
    assert f"reused {finished} of 4 units" in resumed.stderr + resumed.stdout
    assert _per_image(again) == _per_image(single)

    # A different configuration on the same folder: one line, exit 2, nothing overwritten.
    before = {p.name: p.read_bytes() for p in (out / "units").iterdir()}
    other = _evaluate(ckpt, manifest, data, out, "--resume", "--seed", "1")
    assert other.returncode == 2
    lines = [line for line in other.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("fortify: error:") and "differs" in lines[0]
    assert {p.name: p.read_bytes() for p in (out / "units").iterdir()} == before
