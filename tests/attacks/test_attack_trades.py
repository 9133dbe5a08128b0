"""trades_kl: TRADES' inner maximization (KL from the clean prediction), used by `--mode trades`."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fortify.attacks import trades_kl

EPS = 8 / 255


def _kl(model, x, x_adv) -> torch.Tensor:
    with torch.no_grad():
        p = F.softmax(model(x), dim=1)
        return F.kl_div(F.log_softmax(model(x_adv), dim=1), p, reduction="none").sum(1)


def test_raises_the_kl_far_above_random_noise_and_stays_in_the_ball(tiny_model, test_batch):
    x = test_batch[0][:64]
    grads = [None if p.grad is None else p.grad.clone() for p in tiny_model.parameters()]
    tiny_model.train()
    x_adv = trades_kl(tiny_model, x, eps=EPS, steps=5, generator=torch.Generator().manual_seed(0))
    assert tiny_model.training and all(p.requires_grad for p in tiny_model.parameters())
    tiny_model.eval()
    for p, g in zip(tiny_model.parameters(), grads, strict=True):  # parameter gradients untouched
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert (x_adv - x).abs().max() <= EPS + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    signs = torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    noise = (x + EPS * signs).clamp(0, 1)
    assert _kl(tiny_model, x, x_adv).mean() > 3 * _kl(tiny_model, x, noise).mean()


def test_seeded_and_eps_zero_is_the_identity(tiny_model, test_batch):
    x = test_batch[0][:16]
    a, b = (
        trades_kl(tiny_model, x, eps=EPS, steps=2, generator=torch.Generator().manual_seed(3)) for _ in "ab"
    )
    assert torch.equal(a, b)
    assert torch.equal(trades_kl(tiny_model, x, eps=0.0, steps=2), x)
