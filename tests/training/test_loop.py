"""Model selection, resume equivalence, run-dir refusals, OOM handling, overfitting guard, augmentation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fortify.errors import CheckpointError, ConfigError
from fortify.training import epoch as epoch_module
from fortify.training import load_model, selection, train, validation
from fortify.training.augment import augment_batch
from fortify.training.checkpoints import load_training_state
from fortify.training.config import TrainConfig

TIMING = ("train_seconds", "val_seconds", "epoch_seconds")


def _records(run: str | Path) -> list[dict]:
    return [json.loads(x) for x in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def _scripted_evaluate(script):
    """Replace validation with fixed numbers: clean acc peaks at epoch 1, robust acc at epoch 2."""
    calls = iter(script)

    def fake(*args, robust, fgsm_too, **kwargs):
        clean, rob = next(calls)
        return {
            "val_loss": 1.0,
            "val_clean_acc": clean,
            "val_robust_acc": rob if robust else None,
            "val_fgsm_acc": 0.5 if fgsm_too else None,
        }

    return fake


@pytest.mark.parametrize(
    "mode, expected_best, new_best", [("pgd", 2, [True, True, False]), ("standard", 1, [True, False, False])]
)
def test_best_checkpoint_uses_robust_accuracy_for_adversarial_modes(
    tiny_config, monkeypatch, mode, expected_best, new_best
):
    script = [(0.9, 0.2), (0.7, 0.5), (0.6, 0.3)]
    monkeypatch.setattr(validation, "measure_accuracy", _scripted_evaluate(script))
    cfg = tiny_config(mode=mode, epochs=3)
    summary = train(cfg, progress=False)
    assert summary["best_epoch"] == expected_best
    _, info = load_model(Path(cfg.out) / "best.safetensors")
    assert info["epoch"] == expected_best
    _, last = load_model(Path(cfg.out) / "last.safetensors")
    assert last["epoch"] == 3 and last["best_epoch"] == expected_best
    assert [r["best"] for r in _records(cfg.out)] == new_best  # "best": a new best at that epoch


def test_balanced_selection_keeps_the_epoch_that_recognises_the_rare_class(
    tiny_config, monkeypatch, tmp_path
):
    # epoch 1: higher accuracy by calling the rare class something else; epoch 2: lower accuracy, higher
    # balanced accuracy. Selecting on accuracy keeps epoch 1, on balanced accuracy epoch 2.
    script = iter([(0.90, 0.60), (0.85, 0.80), (0.80, 0.70)] * 3)

    def fake(*args, robust, fgsm_too, **kwargs):
        acc, bal = next(script)
        return {
            "val_loss": 1.0,
            "val_clean_acc": acc,
            "val_robust_acc": None,
            "val_fgsm_acc": None,
            "val_clean_bal_acc": bal,
            "val_robust_bal_acc": None,
        }

    monkeypatch.setattr(validation, "measure_accuracy", fake)
    plain = train(tiny_config(epochs=3, out=str(tmp_path / "acc")), progress=False)
    balanced = train(tiny_config(epochs=3, select_on="balanced", out=str(tmp_path / "bal")), progress=False)
    assert (plain["best_epoch"], plain["selection"]) == (1, "val_clean_acc")
    assert (balanced["best_epoch"], balanced["selection"]) == (2, "val_clean_bal_acc")
    last = train(tiny_config(epochs=3, select_on="last", out=str(tmp_path / "last")), progress=False)
    assert (last["best_epoch"], last["selection"]) == (3, "epoch")
    assert [r["best"] for r in _records(tmp_path / "last")] == [True, True, True]
    _, info = load_model(tmp_path / "bal" / "best.safetensors")
    assert info["epoch"] == 2


class _Constant(torch.nn.Module):
    """Always predicts class 0, whatever the input (so an attack cannot change its answers)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([3.0, 0.0, 0.0]) + 0 * self.w * x.flatten(1).sum(1, keepdim=True)


def test_validation_reports_balanced_accuracy_as_mean_recall_over_present_classes():
    from fortify.distributed import DistInfo
    from fortify.runtime import Runtime

    x = torch.rand(10, 1, 8, 8)
    y = torch.tensor([0] * 8 + [1] * 2)  # class 2 absent from this validation set
    common = dict(
        runtime=Runtime.resolve("cpu", "fp32"),
        info=DistInfo(),
        eps=2 / 255,
        steps=2,
        fgsm_too=False,
        seed=0,
        num_classes=3,
    )
    m = validation.measure_accuracy(_Constant(), x, y, robust=True, **common)
    assert m["val_clean_acc"] == pytest.approx(0.8)  # 8 of 10 are class 0
    assert m["val_clean_bal_acc"] == pytest.approx(0.5)  # recalls 1.0 and 0.0; absent class 2 not counted
    assert m["val_robust_bal_acc"] == pytest.approx(0.5)
    m = validation.measure_accuracy(_Constant(), x, y, robust=False, **common)
    assert m["val_robust_bal_acc"] is None and m["val_robust_acc"] is None


def test_early_stopping_with_patience(tiny_config, monkeypatch):
    monkeypatch.setattr(
        validation, "measure_accuracy", _scripted_evaluate([(0.9, 0.9), (0.5, 0.5), (0.4, 0.4)] * 2)
    )
    cfg = tiny_config(mode="fast", epochs=5, patience=2, val_robust=True)
    summary = train(cfg, progress=False)
    assert summary["epochs_completed"] == 3 and summary["best_epoch"] == 1
    assert "early stop" in summary["stopped"]


def test_resume_after_interruption_matches_uninterrupted_run(tiny_config, tmp_path):
    kwargs = dict(mode="mixed", epochs=3, batch_size=8, attack_steps=2, eps_warmup_epochs=2)
    full = tiny_config(out=str(tmp_path / "full"), **kwargs)
    train(full, progress=False)
    cut = tiny_config(out=str(tmp_path / "cut"), **kwargs)
    first = train(cut, progress=False, stop_after_epoch=1)  # "killed" after epoch 1
    assert first["epochs_completed"] == 1
    with pytest.raises(ConfigError, match="--resume"):
        train(cut, progress=False)  # refuses to clobber without --resume/--force
    train(cut, resume=True, progress=False)
    a = [{k: v for k, v in r.items() if k not in TIMING} for r in _records(full.out)]
    b = [{k: v for k, v in r.items() if k not in TIMING} for r in _records(cut.out)]
    assert a == b
    ma, _ = load_model(Path(full.out) / "last.safetensors")
    mb, _ = load_model(Path(cut.out) / "last.safetensors")
    for (name, pa), pb in zip(ma.state_dict().items(), mb.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name


def test_resume_drops_metric_lines_written_after_the_last_checkpoint(tiny_config):
    cfg = tiny_config(epochs=2)
    train(cfg, progress=False, stop_after_epoch=1)
    metrics = Path(cfg.out) / "metrics.jsonl"
    metrics.write_text(
        metrics.read_text() + json.dumps({"epoch": 2, "loss": 9.9}) + '\n{"epo'
    )  # crash debris
    train(cfg, resume=True, progress=False)
    assert [r["epoch"] for r in _records(cfg.out)] == [1, 2]
    assert _records(cfg.out)[1]["loss"] != 9.9


def test_run_dir_with_other_config_is_refused_unless_forced(tiny_config):
    train(tiny_config(), progress=False)
    other = tiny_config(mode="fast")
    with pytest.raises(ConfigError, match="different run"):
        train(other, progress=False)
    with pytest.raises(ConfigError, match="different run"):
        train(other, resume=True, progress=False)
    assert TrainConfig.from_dict(
        __import__("yaml").safe_load((Path(other.out) / "config.yaml").read_text())
    ).mode == ("standard")  # left as it was
    summary = train(other, force=True, progress=False)
    assert summary["epochs_completed"] == 1
    _, info = load_model(Path(other.out) / "best.safetensors")
    assert info["mode"] == "fast"


def test_init_from_checkpoint_of_other_model_or_classes_is_refused(tiny_config, tmp_path):
    base = tiny_config(out=str(tmp_path / "base"))
    train(base, progress=False)
    with pytest.raises(CheckpointError, match="--init checkpoint is smallcnn"):
        train(tiny_config(model="resnet18", init=base.out, out=str(tmp_path / "r18")), progress=False)
    with pytest.raises(CheckpointError, match="px"):
        train(tiny_config(init=base.out, image_size=48, out=str(tmp_path / "px")), progress=False)
    summary = train(tiny_config(mode="fast", init=base.out, out=str(tmp_path / "ft")), progress=False)
    assert summary["epochs_completed"] == 1


def test_out_of_memory_is_a_one_line_error_and_run_dir_stays_consistent(tiny_config, monkeypatch):
    def oom(*args, **kwargs):
        raise RuntimeError(
            "DefaultCPUAllocator: can't allocate memory: you tried to allocate 9999999999 bytes"
        )

    monkeypatch.setattr(epoch_module, "training_step_loss", oom)
    cfg = tiny_config()
    with pytest.raises(ConfigError, match="batch size 12 does not fit"):
        train(cfg, progress=False)
    run = Path(cfg.out)
    assert (run / "config.yaml").is_file() and not (run / "last.json").exists()
    assert not list(run.glob(".*.tmp"))


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(mode="free"), "unknown mode"),
        (dict(model="vgg"), "unknown model"),
        (dict(eps=-0.1), "eps must be >= 0"),
        (dict(mode="pgd", eps=0.0), "needs eps > 0"),
        (dict(batch_size=1), "batch-size"),
        (dict(intensity_jitter=1.5), "intensity-jitter"),
        (dict(max_rotation=90), "max-rotation"),
        (dict(max_zoom=1.5), "max-zoom"),
        (dict(class_balanced=True, balanced_sampling=True), "not both"),
        (dict(select_on="f1"), "unknown select-on"),
        (dict(select_on="last", patience=2), "cannot stop early"),
        (dict(mode="pgd", mixup_alpha=0.2), r"\(standard mode only\)"),
        (dict(awp_gamma=5e-3), r"\(adversarial modes only\)"),
        (dict(mode="pgd", awp_gamma=-1.0), "awp-gamma"),
    ],
)
def test_bad_config_values(tiny_config, overrides, match):
    with pytest.raises(ConfigError, match=match):
        train(tiny_config(**overrides), progress=False)


def test_catastrophic_overfitting_detection():
    cfg = TrainConfig(mode="fast")
    state = selection.LoopState()
    healthy = {"epoch": 1, "val_robust_acc": 0.6, "val_fgsm_acc": 0.7}
    selection.check_catastrophic_overfitting(cfg, healthy, state)
    assert healthy["catastrophic_overfitting"] is False
    collapsed = {"epoch": 2, "val_robust_acc": 0.05, "val_fgsm_acc": 0.8}
    with pytest.warns(selection.CatastrophicOverfittingWarning, match="epoch 2"):
        selection.check_catastrophic_overfitting(cfg, collapsed, state)
    assert collapsed["catastrophic_overfitting"] is True and state.co_epochs == [2]
    both_low = {"epoch": 3, "val_robust_acc": 0.1, "val_fgsm_acc": 0.15}  # just a weak model, not CO
    selection.check_catastrophic_overfitting(cfg, both_low, state)
    assert both_low["catastrophic_overfitting"] is False


def test_catastrophic_overfitting_stop_keeps_best(tiny_config, monkeypatch):
    monkeypatch.setattr(
        validation, "measure_accuracy", _scripted_evaluate([(0.8, 0.6), (0.9, 0.02), (0.9, 0.01)])
    )
    monkeypatch.setattr(selection, "CO_FGSM_GAP", 0.3)
    cfg = tiny_config(mode="fast", epochs=3, co_action="stop")
    with pytest.warns(selection.CatastrophicOverfittingWarning):
        summary = train(cfg, progress=False)
    assert summary["catastrophic_overfitting"] and summary["co_epochs"] == [2]
    assert summary["epochs_completed"] == 2 and summary["best_epoch"] == 1


@pytest.mark.parametrize("max_shift", [0.0, 0.1])
def test_augmentation_stays_in_range_and_is_seeded(max_shift):
    x = torch.rand(8, 1, 32, 32)
    a = augment_batch(x, torch.Generator().manual_seed(1), max_shift=max_shift)
    b = augment_batch(x, torch.Generator().manual_seed(1), max_shift=max_shift)
    c = augment_batch(x, torch.Generator().manual_seed(2), max_shift=max_shift)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1 and a.shape == x.shape
    assert not torch.allclose(a, x)
    flipped_or_not = [torch.equal(a[i], x[i]) or torch.equal(a[i], x[i].flip(-1)) for i in range(8)]
    assert all(flipped_or_not) == (max_shift == 0)  # without shifts every image is itself or its mirror


def test_max_shift_is_validated():
    with pytest.raises(ConfigError, match="max-shift"):
        TrainConfig(data="phantom", out="x", max_shift=0.7).validate()


def test_a_log_gets_one_line_per_epoch_with_an_eta(tiny_config, capsys):
    train(tiny_config(epochs=2), progress=True)  # captured output is not a terminal, as in a log file
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
    assert all("loss" in line and "val clean" in line and "min left" in line for line in lines)
    assert "━" not in err  # no progress-bar drawing in a log


def test_on_epoch_reports_each_finished_epoch_and_a_resumed_run_continues_the_count(tiny_config):
    seen: list[tuple[int, float]] = []
    cfg = tiny_config(epochs=3)
    train(cfg, progress=False, stop_after_epoch=2, on_epoch=lambda e, s: seen.append((e, s)))
    train(cfg, resume=True, progress=False, on_epoch=lambda e, s: seen.append((e, s)))
    assert [e for e, _ in seen] == [1, 2, 3]
    records = _records(cfg.out)
    assert [s for _, s in seen] == [r["epoch_seconds"] for r in records]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    model, _ = load_model(path)
    return model.state_dict()


def test_ema_checkpoints_hold_the_average_and_resume_bit_exactly(tiny_config, tmp_path):
    kwargs = dict(epochs=3, batch_size=4, ema_decay=0.9)
    full = tiny_config(out=str(tmp_path / "full"), **kwargs)
    train(full, progress=False)
    plain = tiny_config(out=str(tmp_path / "plain"), epochs=3, batch_size=4)
    train(plain, progress=False)
    ema, raw = _weights(Path(full.out) / "last.safetensors"), _weights(Path(plain.out) / "last.safetensors")
    # same seed and data order: the trained weights match the plain run, so the saved average must differ
    trained = load_training_state(Path(full.out) / "last.state.pt")["extra"]["trained_weights"]
    conv = next(k for k in raw if k.endswith("weight") and raw[k].dim() == 4)
    assert torch.equal(trained[conv], raw[conv])
    assert not torch.allclose(ema[conv], raw[conv])
    cut = tiny_config(out=str(tmp_path / "cut"), **kwargs)
    train(cut, progress=False, stop_after_epoch=1)
    train(cut, resume=True, progress=False)
    a = [{k: v for k, v in r.items() if k not in TIMING} for r in _records(full.out)]
    b = [{k: v for k, v in r.items() if k not in TIMING} for r in _records(cut.out)]
    assert a == b
    assert all(torch.equal(v, _weights(Path(cut.out) / "last.safetensors")[k]) for k, v in ema.items())


def test_update_ema_is_the_exponential_average():
    model, ema = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    start = ema.weight.detach().clone()
    epoch_module.update_ema(ema, model, 0.75)
    assert torch.allclose(ema.weight, 0.75 * start + 0.25 * model.weight.detach())


def test_label_smoothing_changes_the_loss_and_is_validated(tiny_config):
    from fortify.training.recipes import _ce

    logits, y = torch.tensor([[4.0, 0.0, 0.0]]), torch.tensor([0])
    sharp = _ce(logits, y, None, tiny_config())
    smooth = _ce(logits, y, None, tiny_config(label_smoothing=0.3))
    # smoothing puts 0.1 target mass on each wrong class: a confident right answer now costs more
    expected = -(0.8 * torch.log_softmax(logits, 1)[0, 0] + 0.1 * torch.log_softmax(logits, 1)[0, 1:].sum())
    assert smooth > sharp and torch.isclose(smooth, expected)
    with pytest.raises(ConfigError, match="label-smoothing"):
        tiny_config(label_smoothing=1.0).validate()
    with pytest.raises(ConfigError, match="ema-decay"):
        tiny_config(ema_decay=1.0).validate()
