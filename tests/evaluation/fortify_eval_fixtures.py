"""Tiny trained checkpoints on phantom data for the evaluation and CLI tests.

smallcnn at 32 px on "phantom:n=30" (90 images, 12 in the test split). Training the whole
network takes tens of seconds on two shared cores, so the fixture fits only the linear head on
the random convolutional features (a linear probe: a few hundred Adam steps on cached features,
well under a second) and folds the feature standardization into it. The result is an ordinary
smallcnn checkpoint with clean accuracy well above chance, so the attacks have something to
break, and gradients flow through every layer as in any trained model. The files
live in pytest's per-session base temp folder and are reused by every test module that asks
(evaluation tests and CLI tests import these fixtures; training happens once per session).
"""

from __future__ import annotations

from pathlib import Path

import torch

from fortify.attacks import ThreatModel, parse_spec
from fortify.data import load_split, make_split, save_manifest
from fortify.evaluation import EvalSettings
from fortify.models import build_model
from fortify.runtime import seed_everything
from fortify.training.checkpoints import save_checkpoint, sha256_file

PHANTOM = "phantom:n=30"
IMAGE_SIZE = 32
EPS = 8 / 255
# Cheap attack settings so one evaluation takes seconds.
FAST_ATTACKS = [
    "fgsm:eps=8/255",
    "pgd:eps=8/255,steps=5",
    "cw:steps=10,binary_steps=2,c=1,max_l2=0.5",
    "strong:eps=8/255,steps=3,pgd_restarts=1,square_queries=20",
]


def eval_settings(
    *,
    attacks: list[str] | None = None,
    eps: float | None = None,
    curve_attacks: tuple[str, ...] | list[str] | None = None,
    transfer_attack: str | None = None,
    **fields,
) -> EvalSettings:
    """EvalSettings from attack texts as a person types them (parsed here, once, like the CLI does)."""
    typed = dict(fields)
    if attacks is not None:
        typed["attacks"] = [parse_spec(a) for a in attacks]
    if eps is not None:
        typed["threat_model"] = ThreatModel("linf", eps)
    if curve_attacks is not None:
        typed["curve_attacks"] = [parse_spec(t, template=True) for t in curve_attacks]
    if transfer_attack is not None:
        typed["transfer_attack"] = parse_spec(transfer_attack)
    if "eps_curve" in typed:
        typed["eps_curve"] = list(typed["eps_curve"])
    return EvalSettings(**typed).validate()


FAST_EVAL = eval_settings(
    attacks=FAST_ATTACKS,
    eps=EPS,
    eps_curve=(0.0, 4 / 255, 16 / 255),
    curve_attacks=("pgd:steps=3",),
    batch_size=32,
    examples_per_class=2,
    sanity_steps_factor=2,
    sanity_restarts=1,
)


def _fit_head(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 150) -> None:
    """Linear probe on the (random) conv features; standardization folded into net.fc."""
    model.eval()
    with torch.no_grad():
        feats = model.net.pool(model.net.features(model.normalize(x))).flatten(1)
        mu, sd = feats.mean(0), feats.std(0) + 1e-6
    head = torch.nn.Linear(feats.shape[1], int(y.max()) + 1)
    opt = torch.optim.Adam(head.parameters(), lr=0.05, weight_decay=1e-3)
    z = (feats - mu) / sd
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(head(z), y).backward()
        opt.step()
    with torch.no_grad():
        model.net.fc.weight.copy_(head.weight / sd)
        model.net.fc.bias.copy_(head.bias - (head.weight * mu / sd).sum(1))


def _make(stem: Path, *, seed: int, train: bool = True, classes: list[str] | None = None) -> Path:
    weights = stem.with_name(stem.name + ".safetensors")
    if weights.exists():
        return weights
    seed_everything(seed)
    manifest_path = stem.parent / "split.json"
    save_manifest(make_split(PHANTOM, seed=0, image_size=IMAGE_SIZE), manifest_path)
    train_set = load_split(manifest_path, PHANTOM, image_size=IMAGE_SIZE)["train"]
    model = build_model("smallcnn", len(classes or train_set.classes)).eval()
    if train:
        _fit_head(model, *train_set.tensors())
    classes = classes or list(train_set.classes)
    info = {
        "model": "smallcnn",
        "num_classes": len(classes),
        "in_channels": 1,
        "image_size": IMAGE_SIZE,
        "classes": classes,
        "mode": "standard",
        "eps": 0.0,
        "epoch": 1,
        "config": {"seed": seed},
        "split": {"manifest": str(manifest_path.resolve()), "sha256": sha256_file(manifest_path)},
    }
    save_checkpoint(stem, model.eval(), info)
    return weights


def _dir(factory, name: str) -> Path:
    path = factory.getbasetemp() / f"fortify-eval-{name}"
    path.mkdir(exist_ok=True)
    return path


def tiny_checkpoint_path(factory) -> Path:
    return _make(_dir(factory, "a") / "best", seed=0)


def tiny_checkpoint_b_path(factory) -> Path:
    """A second model on other random features (transfer tests)."""
    return _make(_dir(factory, "b") / "best", seed=1)


def wrong_classes_checkpoint_path(factory) -> Path:
    """Untrained 2-class model: must be refused on the 3-class phantom."""
    return _make(_dir(factory, "wrong") / "best", seed=0, train=False, classes=["benign", "malignant"])
