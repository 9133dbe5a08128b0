"""Process-group plumbing for `torchrun --nproc-per-node N -m fortify train|evaluate ...`.

torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; with WORLD_SIZE > 1 we join a process group (gloo on
CPU, nccl on CUDA). Training: each rank trains on its shard of a permutation that every rank draws
from the same seeded generator (what DistributedSampler does), attacks run per rank on the local
shard. Evaluation: each rank computes its share of the work units (fortify.evaluation.units) and
rank 0 gathers them. Only rank 0 writes results. On CPU each process gets cores / processes-per-node
intra-op threads. Single-process runs skip all of this. A leaf module (training and evaluation use it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this call joined the group: its caller leaves it (shutdown); else a caller
    # further up (the pipeline running training and evaluation in one group) does

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> DistInfo:
    """Join the torchrun process group if there is one; returns this process's place in it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    owns = not dist.is_initialized()
    if owns:
        use_cuda = torch.cuda.is_available() and device in ("auto", "cuda") or device.startswith("cuda")
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        if not use_cuda:
            torch.set_num_threads(cpu_threads(int(os.environ.get("LOCAL_WORLD_SIZE", world))))
    return DistInfo(rank=rank, world_size=world, local_rank=local, owns_group=owns)


def shard_indices(perm: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """This rank's share of `perm`, padded by wrap-around so every rank gets the same count."""
    if not info.enabled:
        return perm
    n = perm.numel()
    per_rank = -(-n // info.world_size)
    padded = torch.cat([perm, perm[: per_rank * info.world_size - n]])
    return padded[info.rank :: info.world_size]


def all_reduce_sum(values: list[float], info: DistInfo, device: torch.device) -> list[float]:
    """Sum a few scalars over ranks (metrics are counts/sums, so sums make them global)."""
    if not info.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def broadcast_object(obj, info: DistInfo):
    """Rank 0's value of a small picklable object on every rank (errors, decisions)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    """Leave the process group cleanly (a process exiting inside it can abort its peers)."""
    if info.enabled and info.owns_group and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def cpu_threads(local_world_size: int) -> int:
    """Intra-op threads for one of `local_world_size` processes on this machine: the cores shared out,
    so processes x threads = cores (torchrun's default of 1 thread each leaves cores idle)."""
    override = os.environ.get("FORTIFY_THREADS")
    if override:
        return max(1, int(override))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, local_world_size))


def gather_objects(obj, info: DistInfo) -> list:
    """Every rank's `obj` on rank 0, in rank order (the other ranks get []); [obj] without torchrun."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size if info.is_main else None
    dist.gather_object(obj, out, dst=0)
    return list(out) if info.is_main else []
