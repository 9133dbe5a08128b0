"""Transfer attacks: adversarial images crafted on one checkpoint, evaluated on another.

Besides the transfer accuracy this reports the white-box accuracy of the same attack on the
target, so "white-box no weaker than transfer" (Carlini et al. 2019) can be checked: if images
made for another model fool the target more than attacking the target itself, the white-box
attack is failing on the target (gradient masking) and its robustness number is not credible.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from fortify.attacks import AttackSpec
from fortify.distributed import init_distributed
from fortify.errors import CheckpointError
from fortify.evaluation import sanity
from fortify.evaluation.attack_runs import accuracy
from fortify.evaluation.attack_set import default_pgd_spec, for_evaluation
from fortify.evaluation.batches import attack_dataset, predict
from fortify.evaluation.loading import check_checkpoint_path, open_checkpoint, open_test_set
from fortify.evaluation.settings import EvalSettings
from fortify.evaluation.units import (
    UnitResult,
    compute_units,
    digest,
    joined,
    open_units,
    unit_seed,
    unit_slices,
)
from fortify.fileio import sha256_file
from fortify.progress import tasks as progress_tasks
from fortify.runtime import Runtime, seed_everything


def _craft_spec(requested: AttackSpec, spec: AttackSpec) -> AttackSpec:
    """The attack run on the source: `spec` without early stopping, unless the request set it."""
    # Crafting on the source runs every step unless the spec says otherwise: an image retired at the
    # source's first success sits on the source's decision boundary and rarely transfers, which made
    # transfer look weaker than it is (on IQ-OTH/NCCD, normal->adversarial transfer accuracy equalled
    # clean accuracy) and the white-box-vs-transfer sanity check pass for the wrong reason.
    if "early_stop" not in requested.params and spec.params.get("early_stop") is True:
        return spec.replace(early_stop=False)
    return spec


def _open_pair(source_ckpt: str | Path, target_ckpt: str | Path, runtime: Runtime):
    """(source model, target model, target's checkpoint info), both prepared for `runtime`; raises
    CheckpointError unless they agree on classes, image size and input channels."""
    source, source_info = open_checkpoint(source_ckpt)
    target, target_info = open_checkpoint(target_ckpt)
    for key in ("classes", "image_size", "in_channels"):
        if source_info.get(key) != target_info.get(key):
            raise CheckpointError(
                f"cannot transfer between checkpoints with different {key}: "
                f"{source_info.get(key)!r} vs {target_info.get(key)!r}"
            )
    return runtime.prepare_model(source).eval(), runtime.prepare_model(target).eval(), target_info


def _predictions(
    source, target, x, x_src, x_wb, runtime: Runtime, batch_size: int
) -> dict[str, torch.Tensor]:
    """One unit's predictions: the target's on its clean, transferred and white-box images, the source's
    on its own adversarial images."""
    return {
        "clean": predict(target, x, runtime, batch_size)[0],
        "transfer": predict(target, x_src, runtime, batch_size)[0],
        "own": predict(source, x_src, runtime, batch_size)[0],
        "white_box": predict(target, x_wb, runtime, batch_size)[0],
    }


def _accuracies(y: torch.Tensor, pred: dict[str, torch.Tensor]) -> dict[str, float]:
    return {
        "transfer_accuracy": accuracy(y, pred["transfer"]),
        "white_box_accuracy": accuracy(y, pred["white_box"]),
        "clean_accuracy": accuracy(y, pred["clean"]),
        "source_accuracy": accuracy(y, pred["own"]),
    }


def _fingerprint(
    source_ckpt, target_ckpt, test, y, spec, craft_spec, s: EvalSettings, runtime: Runtime
) -> dict:
    """What a transfer unit's outcome depends on: a units folder is reused only under exactly this."""
    return {
        "source": sha256_file(source_ckpt),
        "target": sha256_file(target_ckpt),
        "test_set": digest([list(test.dataset.paths), list(test.dataset.file_hashes)]),
        "labels": digest(y),
        "attack": str(spec),
        "craft_attack": str(craft_spec),
        "seed": s.seed,
        "unit_size": s.unit_size,
        "batch_size": s.batch_size,
        "precision": runtime.precision,
        "device": runtime.device.type,
    }


def evaluate_transfer(
    source_ckpt: str | Path,
    target_ckpt: str | Path,
    *,
    data: str | Path,
    settings: EvalSettings | None = None,
    split: str | Path | None = None,
    runtime: Runtime | None = None,
    progress: bool = False,
    cache_dir: str | Path | None = None,
    source_name: str | None = None,
    target_name: str | None = None,
    units_dir: str | Path | None = None,
    resume: bool = False,
) -> dict | None:
    """Craft `settings.transfer_attack` (default: PGD at the default budget in `settings.threat_model`) on
    the source model, measure on the target; also white-box on the target. `settings` also gives the
    batch size, the test-image limit and the seed.

    Returns one `transfer.json` pair: source, target, attack (white-box), craft_attack (run on the source
    without early stopping), transfer_accuracy, white_box_accuracy, clean_accuracy (target),
    source_accuracy (source on its own adversarial images), n, units, seconds, and the
    white-box-vs-transfer sanity check.

    The images run in work units (fortify.evaluation.units), each seeded from (seed, what, unit): kept in
    `units_dir` when given (`resume` reuses the finished ones and refuses units of another configuration),
    and under torchrun shared out among the processes; only rank 0 returns the pair (the others None).
    """
    started = time.perf_counter()
    check_checkpoint_path(source_ckpt)
    check_checkpoint_path(target_ckpt)
    s = (settings or EvalSettings()).validate()
    requested = s.transfer_attack or default_pgd_spec(s.threat_model)
    batch_size, seed = s.batch_size, s.seed
    spec = for_evaluation(requested)  # white-box on the target: the first success per image suffices
    craft_spec = _craft_spec(requested, spec)
    runtime = runtime or Runtime.resolve()
    source, target, target_info = _open_pair(source_ckpt, target_ckpt, runtime)
    test = open_test_set(
        data, target_info, target_ckpt, split=split, limit=s.limit, progress=progress, cache_dir=cache_dir
    )
    x, y = test.dataset.tensors()

    dist = init_distributed(runtime.device.type)
    fingerprint = _fingerprint(source_ckpt, target_ckpt, test, y, spec, craft_spec, s, runtime)
    store = open_units(units_dir, fingerprint, resume=resume, dist=dist)
    units = unit_slices(len(x), s.unit_size)
    with progress_tasks(progress and dist.is_main) as start:
        craft = start(f"transfer: craft {craft_spec}", len(x))
        white_box = start(f"transfer: white-box {spec}", len(x))

        # each unit seeded from (seed, what, unit): the pair does not depend on which process ran it
        def unit(k: int, sl: slice) -> UnitResult:
            seed_everything(unit_seed(seed, "transfer craft", k))
            x_src = attack_dataset(craft_spec, source, x[sl], y[sl], runtime, batch_size, craft)
            seed_everything(unit_seed(seed, "transfer white-box", k))
            x_wb = attack_dataset(spec, target, x[sl], y[sl], runtime, batch_size, white_box)
            pred = _predictions(source, target, x[sl], x_src, x_wb, runtime, batch_size)
            return UnitResult(k, sl.start, sl.stop, pred)

        done, reused = compute_units(units, unit, store, dist)
    if not dist.is_main:
        return None
    accuracies = _accuracies(y, joined(done))
    source_label = source_name or str(source_ckpt)
    pair = {
        "source": source_label,
        "target": target_name or str(target_ckpt),
        "attack": str(spec),
        "craft_attack": str(craft_spec),
        **accuracies,
        "n": len(y),
        "units": {"size": s.unit_size, "count": len(units), "reused": reused, "processes": dist.world_size},
        "seconds": time.perf_counter() - started,
    }
    pair["sanity"] = sanity.white_box_no_weaker_than_transfer(
        pair["white_box_accuracy"], pair["transfer_accuracy"], source_label, str(spec), [spec.name]
    )
    return pair
