"""A folder of outputs replaced whole: the report's figures/ and the explorer/ are written into a scratch
folder beside their target and take its place only when everything has been written, so a failure leaves
the previous folder intact and no stale file of an older build lingers in the new one."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing_folder(target: Path, prefix: str) -> Iterator[Path]:
    """Yield a scratch folder beside `target` (hidden by `prefix`); when the block ends without an error
    it replaces `target`; the scratch folder is removed either way."""
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    try:
        yield scratch
        if target.is_dir():
            shutil.rmtree(target)
        scratch.rename(target)
    finally:
        if scratch.exists():
            shutil.rmtree(scratch)
