"""The wheel users install: distribution ``ffr-synth``, import packages ffr / pipelines / tune, the ``ffr`` script,
and every file of those packages (recipe data, review templates and migrations, the ImageNet-9 mapping, ...).

Built from a copy of the source tree (setuptools writes build/ and *.egg-info/ beside the sources) with the
environment's setuptools, so no build dependency is downloaded.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ffr", "pipelines", "tune")


def _package_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for top in PACKAGES for p in (root / top).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


@pytest.mark.slow
def test_wheel_has_the_distribution_name_the_script_and_every_package_file(tmp_path):
    pytest.importorskip("setuptools", minversion="77")  # pyproject's build requirement
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    for top in PACKAGES:
        shutil.copytree(ROOT / top, src / top, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                          "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    name = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"]
    assert name == "ffr-synth"
    (wheel,) = (tmp_path / "dist").glob("ffr_synth-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = z.read(f"{info}/METADATA").decode()
        entry_points = z.read(f"{info}/entry_points.txt").decode()
        top_level = set(z.read(f"{info}/top_level.txt").decode().split())
    assert f"Name: {name}\n" in metadata
    assert "License-Expression: Apache-2.0\n" in metadata and f"{info}/licenses/LICENSE" in names
    assert "ffr = ffr.cli:main" in entry_points
    assert top_level == set(PACKAGES)
    missing = _package_files(src) - names
    assert not missing, f"left out of the wheel (add a package-data pattern in pyproject.toml): {sorted(missing)}"
