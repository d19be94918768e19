"""The README's Python block runs as written (the first fenced python block under "## Python API")."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def python_block() -> str:
    text = README.read_text()
    section = text[text.index("## Python API"):]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README.md has no fenced python block under '## Python API'"
    return match.group(1)


def test_readme_python_block_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # its tempfile.mkdtemp() lands in this test's folder
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    namespace: dict = {}
    exec(compile(python_block(), str(README), "exec"), namespace)
    result = namespace["result"]
    assert result["variant"] == "ffr" and result["stage"] == 2 and 0.0 <= result["test"]["worst_group_acc"] <= 1.0
    assert result["stage1"]["stage"] == 1 and str(tmp_path) in result["checkpoint"]
    printed = capsys.readouterr().out
    assert "{(0, 0): 4341, (0, 1): 4341, (1, 0): 4341, (1, 1): 4341}" in printed
