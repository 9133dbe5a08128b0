"""Process-group plumbing for `torchrun --nproc_per_node N -m fortify train ...`.

torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; with WORLD_SIZE > 1 we join a process group (gloo on
CPU, nccl on CUDA). Each rank trains on its shard of a permutation that every rank draws from the
same seeded generator (what DistributedSampler does), attacks run per rank on the local shard,
and only rank 0 writes files. Single-process runs skip all of this.
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
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and device in ("auto", "cuda") or device.startswith("cuda")
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank=rank, world_size=world, local_rank=local)


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
    if info.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
