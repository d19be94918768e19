"""The console script: one line and exit 2 for user mistakes; the balance tables for real."""

import subprocess
import sys

import pytest

from ffr.cli import main


def _ffr(*args):
    return subprocess.run([sys.executable, "-m", "ffr.cli", *args], capture_output=True, text=True)


def test_balance_prints_ffr_tables():
    out = _ffr("balance", "--counts", "0,0=914 0,1=5335 1,0=7797 1,1=943", "--bias-ratio", "0.95")
    assert out.returncode == 0, out.stderr
    rows = {line.split(")")[0].strip() + ")": line.split(")")[1].split() for line in out.stdout.splitlines()
            if "(" in line}
    assert rows["(0, 0)"] == ["914", "281", "7516", "4341", "4341"]
    assert out.stdout.splitlines()[-1].split() == ["total", "14989", "13824", "17364", "17364", "17364"]


@pytest.mark.parametrize("args, expected", [
    (["balance", "--counts", "0,0=5 0,1=5", "--bias-ratio", "1.5"], "bias ratio 1.5 is outside (0.5, 1)"),
    (["balance", "--counts", "0,0=-5 0,1=5", "--bias-ratio", "0.9"], "non-negative"),
    (["balance", "--counts", "zero=5", "--bias-ratio", "0.9"], "'zero=5'"),
    (["train", "method=dro"], "unknown stage-2 method 'dro'"),
])
def test_user_errors_are_one_line_and_exit_2(args, expected):
    out = _ffr(*args)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and expected in out.stderr and "Traceback" not in out.stderr


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "generate" in capsys.readouterr().out
