"""Every top-level module of ffr sits in a layer of the import contracts (pyproject.toml, checked by `make lint`).

import-linter checks only the modules a contract names, so a new top-level module left out of the layers
contract would be unchecked; this test names it.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTSIDE_LAYERS = {"ffr.testing"}  # test helper (a fault-injecting TCP proxy), standard library only


def _layered_modules() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c for c in config["contracts"] if c["type"] == "layers"]
    return {name.strip().strip("()") for line in layers["layers"] for name in re.split(r"[|:]", line)}


def _top_level_modules() -> set[str]:
    found = {"pipelines", "tune"}
    for path in (ROOT / "ffr").iterdir():
        if path.suffix == ".py" and path.stem != "__init__":
            found.add(f"ffr.{path.stem}")
        elif (path / "__init__.py").exists():
            found.add(f"ffr.{path.name}")
    return found


def test_every_top_level_module_is_in_a_layer():
    missing = _top_level_modules() - _layered_modules() - OUTSIDE_LAYERS
    assert not missing, f"add {sorted(missing)} to a layer of [tool.importlinter] in pyproject.toml (ARCHITECTURE.md)"

