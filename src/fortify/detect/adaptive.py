"""The adaptive attack: the attacker knows the detector (Carlini & Wagner 2017, "Adversarial examples
are not easily detected"; Tramer et al. 2020, "On adaptive attacks to adversarial example defenses").

L-inf PGD at the same eps on one joint objective, ascended:

    min(max_{j != y} z_j - z_y, kappa)  -  lambda * softplus(d(x) - threshold)

The first term makes the classifier wrong and stops pulling once it is wrong by kappa logits, so
from then on the whole step goes into pushing the detector logit d below the threshold; the second
term fades once d is well below it. One run per lambda (small lambda: fool first; large: hide
first). Every iterate of every run is judged, and each sample keeps its best example: fooled and
undetected with the lowest detector logit, else fooled with the lowest logit, else its input.
Candidates (the non-adaptive PGD examples) enter the same contest, so the adaptive attack is never
weaker than the attack it adapts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fortify.attacks._common import attack_mode
from fortify.detect.detector import Detector


@dataclass
class AdaptiveResult:
    x_adv: torch.Tensor
    success: torch.Tensor  # bool: fooled and not flagged (d <= threshold), as judged during the attack
    fooled: torch.Tensor  # bool: misclassified
    logit: torch.Tensor  # detector logit of x_adv in the attack's precision; inf where nothing fooled


def _margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z_y - max_{j != y} z_j (positive while correctly classified); the true class masked by -inf."""
    other = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    return logits.gather(1, y[:, None]).squeeze(1) - other


def adaptive_pgd(
    detector: Detector,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    threshold: float | None = None,
    steps: int = 100,
    lambdas: Sequence[float] = (0.1, 1.0, 10.0),
    kappa: float = 1.0,
    alpha: float | None = None,
    candidates: Sequence[torch.Tensor] = (),
    skip_succeeded: bool = True,
    generator: torch.Generator | None = None,
) -> AdaptiveResult:
    """Adaptive L-inf PGD against classifier + detector; x in [0, 1]. The caller chooses precision
    (wrap in `runtime.autocast()`); `skip_succeeded` runs later lambdas only on samples that have
    no successful example yet (cheaper; their success cannot be taken away)."""
    tau = float(detector.threshold if threshold is None else threshold)
    if tau != tau:
        raise ValueError("the detector has no threshold; fit it first")
    alpha = float(alpha if alpha is not None else 2.5 * eps / max(steps, 1))
    n = len(x)
    best = x.detach().clone()
    level = torch.zeros(n, dtype=torch.long, device=x.device)  # 0 nothing, 1 fooled, 2 fooled + hidden
    best_d = torch.full((n,), float("inf"), device=x.device)

    def consider(idx: torch.Tensor, xc: torch.Tensor, logits: torch.Tensor, d: torch.Tensor) -> None:
        fooled = logits.argmax(dim=1) != y[idx]
        lv = torch.where(fooled & (d <= tau), 2, torch.where(fooled, 1, 0))
        better = (lv > level[idx]) | ((lv == level[idx]) & (lv > 0) & (d < best_d[idx]))
        if better.any():
            j = idx[better]
            best[j], level[j], best_d[j] = xc[better].detach().to(best.dtype), lv[better], d[better]

    everyone = torch.arange(n, device=x.device)
    with attack_mode(detector), torch.no_grad():
        for cand in candidates:
            logits, d = detector(cand)
            consider(everyone, cand, logits, d)

    with attack_mode(detector):
        for lam in lambdas:
            idx = everyone[level < 2] if skip_succeeded else everyone
            if len(idx) == 0:
                break
            x0, y0 = x[idx].detach(), y[idx]
            noise = torch.rand(x0.shape, generator=generator, device=generator.device if generator else None)
            x_adv = (x0 + (noise.to(x0) * 2 - 1) * eps).clamp(0.0, 1.0)
            for t in range(steps + 1):
                x_adv = x_adv.detach().requires_grad_(True)
                logits, d = detector(x_adv)
                consider(idx, x_adv.detach(), logits.detach(), d.detach())
                if t == steps:
                    break
                objective = (-_margin(logits, y0)).clamp(max=kappa) - lam * F.softplus(d - tau)
                (grad,) = torch.autograd.grad(objective.sum(), x_adv)
                step = x_adv.detach() + alpha * grad.sign()
                x_adv = (x0 + (step - x0).clamp(-eps, eps)).clamp(0.0, 1.0)
    return AdaptiveResult(best.detach(), level == 2, level >= 1, best_d.float())
