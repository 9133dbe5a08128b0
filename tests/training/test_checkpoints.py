"""Checkpoints: round trip, refusal of non-safetensors files, mismatched JSON and code-running pickles."""

from __future__ import annotations

import os
import pickle
import shutil

import pytest
import torch

from fortify.errors import CheckpointError
from fortify.fileio import read_json, write_json
from fortify.models import build_model
from fortify.training import load_model, save_checkpoint
from fortify.training.checkpoints import load_training_state, set_rng_state

INFO = dict(
    model="smallcnn",
    num_classes=3,
    in_channels=1,
    image_size=32,
    classes=["a", "b", "c"],
    mode="standard",
    eps=0.0,
    epoch=1,
)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = build_model("smallcnn", 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.rand(4, 1, 32, 32)).sum().backward()
    opt.step()
    save_checkpoint(tmp_path / "last", model, INFO, optimizer=opt, extra_state={"note": torch.tensor([7])})
    return model.eval(), tmp_path / "last"


def test_round_trip_same_outputs_and_info(saved):
    model, stem = saved
    x = torch.rand(3, 1, 32, 32)
    for ref in (stem.with_suffix(".safetensors"), stem.with_suffix(".json")):
        loaded, info = load_model(ref)
        assert not loaded.training
        assert torch.equal(loaded(x), model(x))
        assert info["model"] == "smallcnn" and info["classes"] == ["a", "b", "c"] and info["epoch"] == 1
    state = load_training_state(stem.with_suffix(".state.pt"))
    assert set(state) == {"optimizer", "rng", "extra"}
    assert state["extra"]["note"].tolist() == [7]


def test_rng_state_round_trip(saved):
    _, stem = saved
    state = load_training_state(stem.with_suffix(".state.pt"))
    set_rng_state(state["rng"])
    a = (torch.rand(3), __import__("random").random(), __import__("numpy").random.rand())
    set_rng_state(state["rng"])
    b = (torch.rand(3), __import__("random").random(), __import__("numpy").random.rand())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]


def test_run_dir_loads_its_best(saved, tmp_path):
    _, stem = saved
    for suffix in (".safetensors", ".json"):
        shutil.copy(stem.with_suffix(suffix), tmp_path / f"best{suffix}")
    _, info = load_model(tmp_path)
    assert info["epoch"] == 1


def test_refuses_non_safetensors_files(saved, tmp_path):
    model, _ = saved
    torch.save(model.state_dict(), tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="not a fortify checkpoint"):
        load_model(tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nope.safetensors")


def test_pickle_disguised_as_safetensors_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    fake = tmp_path / "best.safetensors"
    fake.write_bytes(pickle.dumps(_RunsCode(marker)))
    from fortify.training.checkpoints import sha256_file

    write_json(
        tmp_path / "best.json",
        {"format": "fortify-checkpoint/1", **INFO, "weights_sha256": sha256_file(fake)},
    )
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_model(fake)
    assert not marker.exists()


def test_crafted_training_state_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "last.state.pt"
    torch.save({"optimizer": _RunsCode(marker)}, path)  # torch.save pickles it; weights_only refuses
    with pytest.raises(CheckpointError, match="refused"):
        load_training_state(path)
    assert not marker.exists()


def test_json_that_does_not_describe_the_weights_is_refused(saved):
    _, stem = saved
    info = read_json(stem.with_suffix(".json"))
    write_json(stem.with_suffix(".json"), {**info, "model": "resnet18"})
    with pytest.raises(CheckpointError, match="do not match"):
        load_model(stem.with_suffix(".safetensors"))
    other = build_model("smallcnn", 3)
    save_checkpoint(stem.with_name("other"), other, INFO)
    shutil.copy(stem.with_name("other.safetensors"), stem.with_suffix(".safetensors"))
    with pytest.raises(CheckpointError, match="hash differs"):
        load_model(stem.with_suffix(".safetensors"))
    write_json(stem.with_suffix(".json"), {"format": "something-else"})
    with pytest.raises(CheckpointError):
        load_model(stem.with_suffix(".safetensors"))
