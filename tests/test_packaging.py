"""A wheel, not only a clone or an editable install: the shipped profiles and the study's table travel
inside the package, and an installed copy finds them without the repository around it."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_carries_the_configs_and_an_installed_copy_loads_them(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    dist = tmp_path / "dist"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q"]
    subprocess.run([*build, "-w", str(dist), str(source)], check=True, capture_output=True)
    (wheel,) = dist.glob("fortify-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {p.relative_to(ROOT / "src").as_posix() for p in (ROOT / "src/fortify/configs").rglob("*.yaml")}
    assert "fortify/configs/profiles/quick.yaml" in shipped and "fortify/configs/study_table1.yaml" in shipped
    assert shipped <= names

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)  # a wheel installs by unpacking
    probe = (
        "import fortify; from fortify.pipeline.profiles import list_profiles, load_profile; "
        "from fortify.report.study import load_study_table; "
        "print(fortify.__file__); load_profile('quick'); load_study_table(); print(list_profiles())"
    )
    env = {k: v for k, v in os.environ.items() if k != "FORTIFY_CONFIGS"} | {"PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    )
    where, profiles = done.stdout.splitlines()
    assert Path(where).is_relative_to(site)  # the unpacked copy, not this checkout
    assert {"smoke", "quick", "best", "paper"} <= set(ast.literal_eval(profiles))  # best: extends quick
