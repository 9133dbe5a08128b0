"""The notebooks in examples/ run end to end on the real data (smoke size) and fail on any cell error.

Each runs in a fresh kernel started from this interpreter (`sys.executable`, through a kernel spec in a
temporary folder, so no globally registered "python3" kernel can stand in for it), with this process's
fortify first on PYTHONPATH, the dataset path in FORTIFY_DATA and the notebook's folder as cwd. A last
cell, added in memory only, checks that the kernel imported the same fortify as these tests.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
import torch
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

import fortify

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTEBOOKS = sorted(p.name for p in EXAMPLES.glob("*.ipynb"))
CELL_TIMEOUT_S = 300  # one cell on 2 busy cores; the whole notebook takes well under a minute
FORTIFY_SRC = str(Path(fortify.__file__).resolve().parents[1])


def _kernel_manager(folder: Path) -> AsyncKernelManager:
    """A "python3" kernel spec that runs this interpreter, found only by this kernel manager."""
    spec_dir = folder / "python3"
    spec_dir.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec = {"argv": argv, "display_name": "fortify tests", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    specs = KernelSpecManager(kernel_dirs=[str(folder)], ensure_native_kernel=False)
    return AsyncKernelManager(kernel_name="python3", kernel_spec_manager=specs)


def _kernel_env(data: Path, cache_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (FORTIFY_SRC, env.get("PYTHONPATH")) if p)
    env["FORTIFY_DATA"] = str(data.resolve())
    env.setdefault("FORTIFY_CACHE", str(cache_dir))
    env.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
    return env


def test_every_example_is_tested():
    assert NOTEBOOKS == ["attack_a_scan.ipynb", "evaluate_your_model.ipynb"]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_committed_without_outputs(name):
    nb = nbformat.read(EXAMPLES / name, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: clear the outputs"


@pytest.mark.real_data
@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, real_data_path, cache_dir, tmp_path):
    nb = nbformat.read(EXAMPLES / name, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import fortify\nprint(fortify.__file__)"))
    client = NotebookClient(
        nb,
        km=_kernel_manager(tmp_path / "kernels"),
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(EXAMPLES)}},
    )
    client.execute(cleanup_kc=True, env=_kernel_env(real_data_path, cache_dir))  # raises on a cell error

    imported = nb.cells[-1].outputs[0]["text"].strip()
    assert Path(imported).resolve() == Path(fortify.__file__).resolve()
