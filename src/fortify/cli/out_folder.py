"""`--out`, `--force` and `--resume` under torchrun, for the commands whose work runs in units
(evaluate, detect, certify)."""

from __future__ import annotations

from pathlib import Path

from fortify.distributed import DistInfo


def claim_out(out: Path, force: bool, resume: bool, device: str) -> DistInfo:
    """Join torchrun's group (if any); rank 0 checks --out (and with --force clears its units) while the
    others wait, so no process starts on a folder that is about to be refused or cleared."""
    from fortify.distributed import barrier, init_distributed
    from fortify.evaluation import check_out_dir

    dist = init_distributed(device)
    if dist.is_main:
        check_out_dir(out, force, resume)
    barrier(dist)
    return dist
