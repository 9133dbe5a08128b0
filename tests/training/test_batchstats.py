"""Training attacks craft against batch statistics (craft_bn="batch") without touching BN buffers."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fortify.attacks import fgsm, pgd, trades_kl
from fortify.cli import main
from fortify.errors import ConfigError
from fortify.fileio import read_yaml, write_yaml
from fortify.models import build_model
from fortify.runtime import Runtime
from fortify.training import ADVERSARIAL_MODES, TrainConfig, train
from fortify.training.batchstats import BatchStatsModel, batchnorm_layers, crafting_model
from fortify.training.recipes import make_adversarial, training_step_loss

RUNTIME = Runtime.resolve("cpu", "fp32")
EPS = 8 / 255


def _wrong_stats_model(seed: int = 0) -> nn.Module:
    """smallcnn whose running statistics are far from any batch's (as stale stats can be)."""
    torch.manual_seed(seed)
    model = build_model("smallcnn", 3, in_channels=1)
    for m in batchnorm_layers(model):
        m.running_mean.fill_(-0.5)
        m.running_var.fill_(9.0)
        m.num_batches_tracked.fill_(7)
    return model.train()


def _batch(n: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 32, 32, generator=g), torch.randint(0, 3, (n,), generator=g)


def _buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.named_buffers()}


def _batch_stats_reference(model: nn.Module) -> nn.Module:
    """Independent reference: a copy whose BN layers have no running buffers, so even in eval
    mode PyTorch normalizes with batch statistics."""
    ref = copy.deepcopy(model)
    for m in batchnorm_layers(ref):
        m.running_mean = m.running_var = m.num_batches_tracked = None
    return ref


def test_attacks_through_the_wrapper_leave_every_bn_buffer_bit_identical():
    model = _wrong_stats_model()
    x, y = _batch()
    before = _buffers(model)
    wrapper = BatchStatsModel(model)
    pgd(wrapper, x, y, eps=EPS, steps=3)
    fgsm(wrapper, x, y, eps=EPS, random_start=True)
    trades_kl(wrapper, x, eps=EPS, steps=2, alpha=EPS / 2)
    after = _buffers(model)
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k
    # Mode, BN flags and parameter state are as before; no parameter gradient was made.
    assert model.training and all(m.training and m.track_running_stats for m in batchnorm_layers(model))
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


def test_wrapper_shares_parameters_and_passes_input_gradients():
    model = _wrong_stats_model()
    wrapper = BatchStatsModel(model)
    assert [id(p) for p in wrapper.parameters()] == [id(p) for p in model.parameters()]
    x, y = _batch()
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(wrapper(x), y), x)
    assert grad.abs().sum() > 0


def test_batch_mode_forward_uses_batch_statistics_even_in_eval_mode():
    model = _wrong_stats_model()
    x, y = _batch()
    reference = copy.deepcopy(model).train()(x)  # train-mode forward of an identical model
    wrapper = BatchStatsModel(model).eval()  # what an attack does to it
    with torch.no_grad():
        batch_logits = wrapper(x)
        running_logits = model(x)  # eval mode: the wrong running statistics
    assert torch.allclose(batch_logits, reference, atol=1e-5)
    batch_loss, train_loss = F.cross_entropy(batch_logits, y), F.cross_entropy(reference.detach(), y)
    assert float(batch_loss) == pytest.approx(float(train_loss), abs=1e-5)
    assert (running_logits - batch_logits).abs().max() > 0.1  # the old, eval-mode forward


def _craft(model: nn.Module, mode: str, craft_bn: str, batch_index: int = 0) -> torch.Tensor:
    x, y = _batch()
    cfg = TrainConfig(mode=mode, eps=EPS, attack_steps=2, craft_bn=craft_bn)
    torch.manual_seed(123)  # the attacks' random starts
    x_adv, _ = make_adversarial(
        mode, model, x, y, cfg=cfg, eps=EPS, batch_index=batch_index, epoch=0, runtime=RUNTIME
    )
    return x_adv


def test_batch_mode_crafts_what_a_batch_statistics_model_gives():
    model = _wrong_stats_model()
    x, y = _batch()
    torch.manual_seed(123)
    expected = pgd(_batch_stats_reference(model), x, y, eps=EPS, steps=2)
    assert torch.allclose(_craft(model, "pgd", "batch"), expected, atol=1e-6)


def test_running_mode_reproduces_the_eval_mode_attack():
    model = _wrong_stats_model()
    x, y = _batch()
    torch.manual_seed(123)
    expected = pgd(model, x, y, eps=EPS, steps=2)  # the attack's own eval(): running statistics
    running = _craft(model, "pgd", "running")
    assert torch.equal(running, expected)
    assert not torch.equal(running, _craft(model, "pgd", "batch"))


@pytest.mark.parametrize("craft_bn", ["batch", "running"])
@pytest.mark.parametrize("mode", ADVERSARIAL_MODES)
def test_training_step_runs_in_every_adversarial_mode(mode, craft_bn):
    model = _wrong_stats_model()
    x, y = _batch()
    cfg = TrainConfig(mode=mode, eps=EPS, attack_steps=2, craft_bn=craft_bn)
    out = training_step_loss(
        model, model, x, y, cfg=cfg, eps=EPS, class_weights=None, batch_index=1, epoch=0, runtime=RUNTIME
    )
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.adv_correct is not None
    assert all(p.grad is not None for p in model.parameters())
    # Exactly one forward updated the running statistics: the training forward, not the attack's.
    assert all(int(m.num_batches_tracked) == 8 for m in batchnorm_layers(model))


def test_ddp_wrapper_is_removed(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        model = _wrong_stats_model()
        net = nn.parallel.DistributedDataParallel(model)
        crafter = crafting_model(net, "batch")
        assert isinstance(crafter, BatchStatsModel) and crafter.model is model
        assert crafting_model(net, "running") is model
        before = _buffers(model)
        x, y = _batch()
        pgd(crafter, x, y, eps=EPS, steps=1)
        assert all(torch.equal(v, before[k]) for k, v in _buffers(model).items())
    finally:
        dist.destroy_process_group()


def test_craft_bn_is_validated_recorded_and_on_the_cli(tiny_config, tmp_path):
    assert TrainConfig().craft_bn == "batch"
    with pytest.raises(ConfigError, match="unknown craft_bn"):
        train(tiny_config(mode="fast", craft_bn="eval"), progress=False)
    out = tmp_path / "cli"
    argv = ["train", "--data", "phantom:n=12", "--model", "smallcnn", "--mode", "fast", "--epochs", "1"]
    argv += ["--image-size", "32", "--batch-size", "12", "--precision", "fp32", "--device", "cpu"]
    argv += ["--val-attack-steps", "1", "--craft-bn", "running", "--out", str(out), "--json"]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code in (0, None)
    assert read_yaml(out / "config.yaml")["craft_bn"] == "running"


def test_runs_saved_before_craft_bn_resume_with_running_statistics(tiny_config):
    cfg = tiny_config(mode="fast", epochs=2, craft_bn="running")
    train(cfg, progress=False, stop_after_epoch=1)
    config_file = f"{cfg.out}/config.yaml"
    legacy = read_yaml(config_file)
    del legacy["craft_bn"]  # as written before the option existed
    write_yaml(config_file, legacy)
    with pytest.raises(ConfigError, match="craft_bn: 'running' != 'batch'"):
        train(tiny_config(mode="fast", epochs=2), resume=True, progress=False)
    assert train(cfg, resume=True, progress=False)["epochs_completed"] == 2
