"""Resume: kill a generation run part-way, rerun it, and every manifest id is there exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from process_tree import descendants  # tests/ is on sys.path under pytest

from ffr.shards import SHARD_DIR, complete_shards, read_metadata, read_stats, shard_name
from pipelines import generate
from pipelines.api import plan

pytestmark = pytest.mark.slow

_CHILD = textwrap.dedent("""
    import json, sys
    import ray
    ray.init(address="local", _temp_dir=sys.argv[2], num_cpus=2, include_dashboard=False, log_to_driver=False)
    import pipelines
    pipelines.generate(json.loads(sys.argv[1]))
""")


def _config(output: str, **extra) -> dict:
    # 128² glyphs take ~8 ms each: 40 shards of ~0.15 s, long enough to be killed in the middle
    return {"recipe": "colored-digits", "output": output, "budget": {"per_group": 150}, "shard_size": 15,
            "batch_size": 15, "generator": {"height": 128, "width": 128}, "progress": False,
            "ray": {"min_actors": 1, "max_actors": 1}, "contact_sheet_size": 2, **extra}



def _kill_tree(child: subprocess.Popen) -> None:
    """SIGKILL the driver and every process it started (raylet, GCS, Ray workers) by pid, at once."""
    pids = [child.pid, *descendants(child.pid)]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    child.wait(30)
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() and "Z" not in _state(pid) for pid in pids[1:]):
        assert time.monotonic() < deadline, "killed Ray processes did not exit"
        time.sleep(0.1)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def _assert_exactly_once(root: str, config: dict) -> None:
    manifest = plan(config)
    meta = read_metadata(root, accepted_only=False)
    assert meta["id"].is_unique, meta["id"][meta["id"].duplicated()].tolist()[:5]
    assert set(meta["id"]) == set(manifest["id"])
    assert len(complete_shards(root)) == manifest["shard"].max() + 1


def test_killed_generation_resumes_without_duplicates_or_gaps(ray_cluster, tmp_path):
    root = str(tmp_path / "run")
    config = _config(root)
    n_shards = int(plan(config)["shard"].max()) + 1
    ray_dir = tempfile.mkdtemp(prefix="ffr-resume-ray-")  # short: Ray's socket paths must fit in 107 bytes
    child = subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(config), ray_dir],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": "."})
    deadline = time.monotonic() + 240
    try:
        while len(complete_shards(root)) < 3:  # let a few shards finish, then kill the whole process group
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "generation did not start in time"
            time.sleep(0.05)
    finally:
        _kill_tree(child)
    done_before = complete_shards(root)
    assert 3 <= len(done_before) < n_shards, "the kill came too late to test anything"
    finished_at = {s: read_stats(root, s)["finished_at"] for s in done_before}

    summary = generate(config)  # rerun on the session cluster: only the missing shards are generated
    assert summary["complete"] and summary["shards_skipped"] == len(done_before)
    assert summary["shards_run"] == n_shards - len(done_before)
    assert {s: read_stats(root, s)["finished_at"] for s in done_before} == finished_at  # not redone
    _assert_exactly_once(root, config)


def test_an_incomplete_shard_is_redone_and_stray_files_do_not_count(tmp_path):
    """Shards without their stats marker (a writer killed mid-shard) are invisible, then regenerated."""
    root = str(tmp_path / "run")
    config = _config(root, budget={"per_group": 5}, shard_size=4, generator={}, runner="local")
    assert generate(config)["complete"]
    shards = Path(root) / SHARD_DIR
    (shards / f"{shard_name(2)}.stats.json").unlink()  # as if killed between parquet and marker
    (shards / f"{shard_name(3)}.stats.json").unlink()
    (shards / f"{shard_name(3)}.tar").write_bytes(b"truncated")  # as if killed mid-tar
    (shards / f"{shard_name(4)}.tar.tmp").write_bytes(b"partial")
    assert 2 not in complete_shards(root) and 3 not in complete_shards(root)
    summary = generate(config)
    assert summary["shards_run"] == 2 and summary["complete"]
    _assert_exactly_once(root, config)
