"""Self-supervised pretraining (SimCLR-style) on one split's TRAINING images, as an init for normal training.

An experiment for `benchmarks/recipes.py` (recipe `ssl`), not yet a library feature: with ~90 scans and no
downloads, the question is whether contrastive pretraining on the training images themselves gives the
supervised run a better start. Only the manifest's train images are read (never val or test), and no
label is used. Two views of every image (flip, whole-pixel shift, intensity jitter, small rotation,
the same augmentations training can use) go through the backbone and a 2-layer projection head; the
loss is NT-Xent (Chen et al. 2020) at temperature `tau`. The head is dropped afterwards and the classifier
layer keeps its fresh initialisation; the checkpoint is a normal fortify checkpoint (same model, classes
and image size), so `TrainConfig.init` accepts it.

    .venv/bin/python benchmarks/ssl_pretrain.py --manifest /tmp/recipes/folds/fold-0.json --out /tmp/ssl0
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fortify.data import load_split
from fortify.models import build_model
from fortify.runtime import Runtime, seed_everything
from fortify.training.augment import augment_batch
from fortify.training.checkpoints import save_checkpoint

DEFAULT_DATA = str(Path(__file__).resolve().parents[2] / "shared/datasets/iqothnccd")
VIEW = dict(max_shift=0.08, intensity=0.3, max_rotation=10.0)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> torch.Tensor:
    """SimCLR's loss: each view must pick its partner out of the other 2N - 2 embeddings of the batch."""
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    n = z1.shape[0]
    sim = z @ z.t() / tau
    sim.fill_diagonal_(float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim, partner)


def _features(model: nn.Module) -> tuple[nn.Module, int]:
    """The model with its classifier layer bypassed (torchvision ResNets: net.fc) and the feature width."""
    fc = model.net.fc
    model.net.fc = nn.Identity()
    return model, fc.in_features


def pretrain(
    manifest: Path,
    out: Path,
    *,
    data: str = DEFAULT_DATA,
    model_name: str = "resnet18",
    image_size: int = 128,
    epochs: int = 30,
    batch_size: int = 64,
    lr: float = 2e-3,
    tau: float = 0.2,
    seed: int = 0,
    runtime: Runtime | None = None,
    cache_dir: str | None = None,
) -> Path:
    """Pretrain; write OUT/pretrained.{safetensors,json}; return the safetensors path (kept if present)."""
    target = out / "pretrained.safetensors"
    if target.exists():
        return target
    runtime = runtime or Runtime.resolve("auto", "auto")
    seed_everything(seed)
    train = load_split(manifest, data, image_size=image_size, cache_dir=cache_dir)["train"]
    x, _ = train.tensors()  # labels are not used
    classes = list(train.classes)
    model = build_model(model_name, len(classes), in_channels=1)
    fresh_fc = {k: v.clone() for k, v in model.net.fc.state_dict().items()}
    backbone, width = _features(model)
    head = nn.Sequential(nn.Linear(width, 256), nn.ReLU(inplace=True), nn.Linear(256, 128))
    backbone, head = runtime.prepare_model(backbone), head.to(runtime.device)
    params = [*backbone.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=5e-4)
    steps = epochs * (len(x) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(1, steps))
    gen = torch.Generator().manual_seed(seed)
    backbone.train()
    t0 = time.perf_counter()
    for epoch in range(epochs):
        perm, total = torch.randperm(len(x), generator=gen), 0.0
        for b in range(len(x) // batch_size):  # whole batches only: NT-Xent wants every partner present
            xb = x[perm[b * batch_size : (b + 1) * batch_size]]
            v1, v2 = augment_batch(xb, gen, **VIEW), augment_batch(xb, gen, **VIEW)
            with runtime.autocast():
                z = head(backbone(runtime.to_device(torch.cat([v1, v2]))))
            loss = nt_xent(z[: len(xb)], z[len(xb) :], tau)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach())
        print(f"ssl epoch {epoch + 1}/{epochs}: loss {total / max(1, len(x) // batch_size):.3f}", flush=True)
    model = backbone.cpu().float()
    model.net.fc = nn.Linear(width, len(classes))
    model.net.fc.load_state_dict(fresh_fc)
    info = {
        "model": model_name,
        "num_classes": len(classes),
        "in_channels": 1,
        "image_size": image_size,
        "classes": classes,
        "mode": "simclr",
        "eps": 0.0,
        "split": {"manifest": str(manifest.resolve()), "images_used": "train"},
        "pretraining": {
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "tau": tau,
            "views": VIEW,
            "seconds": round(time.perf_counter() - t0, 1),
        },
    }
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out / "pretrained", model.to(memory_format=torch.contiguous_format), info, rng=False)
    return target


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--image-size", type=int, default=128)
    args = p.parse_args()
    print(pretrain(args.manifest, args.out, data=args.data, epochs=args.epochs, image_size=args.image_size))


if __name__ == "__main__":
    main()
