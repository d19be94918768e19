"""``ffr COMMAND --help`` answers without the ML stack: no torch and no Ray are imported.

Each command module builds its parser from light imports and imports the heavy modules inside ``run()``. Every
command runs in a fresh interpreter (an earlier import would hide a later one), with its help and the help of
each of its sub-actions (``ffr d3s eval --help``). What is checked is the modules loaded, not the time taken.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ffr.cli import COMMANDS

HEAVY = ("torch", "ray", "torchvision", "diffusers", "transformers", "mlflow", "pandas", "timm")

PROBE = """
import argparse, contextlib, io, json, sys
from ffr.cli import main

command = sys.argv[1:]
shown, subactions = [], []
def run_help(argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main([*argv, "--help"])
    shown.append(out.getvalue())

run_help(command)
if command:
    import importlib
    from ffr.cli import COMMANDS
    parser = argparse.ArgumentParser()
    importlib.import_module(COMMANDS[command[0]][0]).add_arguments(parser)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            subactions = list(action.choices)
for name in subactions:
    run_help([*command, name])
print(json.dumps({"modules": sorted({name.split(".")[0] for name in sys.modules}), "helps": len(shown),
                  "usage": all(text.startswith("usage: ffr") for text in shown)}))
"""


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_imports_no_heavy_framework(command):
    argv = [command] if command else []
    out = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["usage"] and found["helps"] >= 1, found
    loaded = sorted(set(HEAVY) & set(found["modules"]))
    assert not loaded, f"`ffr {command} --help` imports {loaded}: import them inside run()"
