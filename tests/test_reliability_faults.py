"""Generation under faults: flaky object storage (a resetting proxy), an outage, a killed actor, a full disk.

After each, the output holds every planned id exactly once (0 duplicates, 0 missing), or the run stopped
with one line and a rerun completes it.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
from process_tree import descendants  # tests/ is on sys.path under pytest

from ffr.cli import main
from ffr.shards import ShardReader, complete_shards, read_metadata
from ffr.testing.fault_proxy import FaultProxy
from pipelines import generate
from pipelines.api import plan

REPO = Path(__file__).resolve().parents[1]
GEN_CONFIG = str(REPO / "configs" / "generate-colored-digits.yaml")


def _config(output: str, per_group: int, shard_size: int, size: int = 32, **extra) -> dict:
    return {"recipe": "colored-digits", "output": output, "budget": {"per_group": per_group},
            "shard_size": shard_size, "batch_size": shard_size, "generator": {"height": size, "width": size},
            "progress": False, "contact_sheet_size": 1, "ray": {"min_actors": 1, "max_actors": 1}, **extra}


def _check_exactly_once(output: str, config: dict) -> None:
    """Every planned id of the first round is present once; no id appears twice."""
    meta = read_metadata(output, accepted_only=False)
    assert meta["id"].is_unique, "duplicate ids"
    planned = set(plan(config)["id"])
    assert planned <= set(meta["id"]), f"{len(planned - set(meta['id']))} planned ids missing"
    ShardReader(output)  # every tar holds the images its parquet names


@pytest.fixture()
def proxy(s3_endpoint, monkeypatch):
    """A 10 %-reset proxy in front of moto; this process's s3fs goes through it too (the env is restored)."""
    target = urlparse(s3_endpoint)
    with FaultProxy((target.hostname, target.port), reset_rate=0.10, seed=11) as p:
        monkeypatch.setenv("FFR_S3_ENDPOINT", p.endpoint)
        yield p


@pytest.mark.slow
def test_generation_through_a_resetting_proxy_is_exactly_once(ray_cluster, s3_bucket, proxy):
    output = f"{s3_bucket}/flaky"
    config = _config(output, per_group=40, shard_size=20, s3_endpoint=proxy.endpoint)  # actors use the proxy
    summary = generate(config)
    assert summary["complete"]
    assert proxy.injected.resets >= 3, proxy.injected
    assert summary["storage_retries"] >= 1, (summary["storage_retries"], proxy.injected)
    proxy.reset_rate = 0.0  # check the result through a healthy path
    _check_exactly_once(output, config)


def test_storage_outage_mid_run_is_one_line_and_the_rerun_completes(s3_bucket, proxy, tmp_path, capsys,
                                                                    monkeypatch):
    """The proxy starts refusing everything after the first shard (runner local: this process's storage)."""
    from pipelines import worker

    monkeypatch.setenv("FFR_S3_MAX_ATTEMPTS", "2")  # keep the outage's backoff short in a test
    proxy.reset_rate = 0.0
    output = f"{s3_bucket}/outage"
    original = worker.ShardWorker.process_shard

    def then_outage(self, shard, rows=None):
        stats = original(self, shard, rows)
        proxy.reset_rate = 1.0
        return stats

    monkeypatch.setattr(worker.ShardWorker, "process_shard", then_outage)
    args = ["generate", "--config", GEN_CONFIG, f"output={output}", "runner=local", "budget.per_group=10",
            "shard_size=10", "generator.height=32", "generator.width=32", "progress=false", "contact_sheet_size=1",
            f"s3_endpoint={proxy.endpoint}"]
    rc = main(args)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "object storage unreachable" in err
    proxy.reset_rate = 0.0
    monkeypatch.setattr(worker.ShardWorker, "process_shard", original)
    assert len(complete_shards(output)) >= 1
    assert main(args) == 0, capsys.readouterr().err
    _check_exactly_once(output, _config(output, per_group=10, shard_size=10))



def _shard_actor_pids() -> list[int]:
    """Pids of this session's generation actors (only our own Ray's processes: others run on this machine)."""
    pids = []
    for pid in descendants(os.getpid()):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"ShardActor" in title:
            pids.append(pid)
    return pids


@pytest.mark.slow
def test_actor_killed_mid_shard_is_restarted_and_the_shard_redone(ray_cluster, tmp_path):
    output = str(tmp_path / "killed")
    # 128² glyphs: shards of ~1 s, so the single actor is busy with a shard whenever it is killed
    config = _config(output, per_group=120, shard_size=60, size=128)
    box: dict = {}
    runner = threading.Thread(target=lambda: box.update(summary=generate(config)), daemon=True)
    runner.start()
    deadline = time.time() + 300
    while not complete_shards(output) and time.time() < deadline:
        time.sleep(0.2)
    victims = _shard_actor_pids()
    assert victims, "no generation actor found"
    done_before = len(complete_shards(output))
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    runner.join(timeout=600)
    assert "summary" in box, "generation did not finish after the actor was killed"
    summary = box["summary"]
    assert summary["complete"]
    assert done_before < summary["shards_run"] + summary["shards_skipped"]  # work went on after the kill
    assert not set(_shard_actor_pids()) & set(victims)
    _check_exactly_once(output, config)


class _FullAfter:
    """A filesystem whose files raise ENOSPC once ``budget`` bytes were written through it (the fallback where
    no size-capped mount can be made)."""

    def __init__(self, fs, budget: int) -> None:
        self.fs, self.budget = fs, budget

    def open(self, path, mode="rb", **kw):
        f = self.fs.open(path, mode, **kw)
        if "w" in mode:
            write = f.write

            def counted(data):
                self.budget -= len(data)
                if self.budget < 0:
                    raise OSError(errno.ENOSPC, "No space left on device", path)
                return write(data)

            f.write = counted
        return f

    def __getattr__(self, name):
        return getattr(self.fs, name)


@pytest.fixture()
def small_disk(tmp_path, monkeypatch):
    """A 1 MiB tmpfs (a manifest and ~2 shards) where the test may mount one (root); else shard writes see
    ENOSPC after 1 MiB."""
    mount = tmp_path / "disk"
    mount.mkdir()
    mounted = shutil.which("mount") is not None and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode == 0
    if not mounted:
        import ffr.shards

        full = {}
        real = ffr.shards.filesystem

        def capped(root):
            fs, base = real(root)
            full.setdefault("fs", _FullAfter(fs, 1024 * 1024))
            return full["fs"], base

        monkeypatch.setattr(ffr.shards, "filesystem", capped)
        yield mount, lambda: monkeypatch.setattr(ffr.shards, "filesystem", real)
        return
    try:
        yield mount, lambda: subprocess.run(["mount", "-o", "remount,size=64m", str(mount)], check=True)
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_full_disk_stops_in_one_line_and_a_rerun_with_space_completes(small_disk, capsys):
    mount, make_space = small_disk
    output = str(mount / "gen")
    args = ["generate", "--config", GEN_CONFIG, f"output={output}", "runner=local", "budget.per_group=100",
            "shard_size=25", "generator.height=64", "generator.width=64", "progress=false", "contact_sheet_size=1"]
    rc = main(args)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "no space left" in err
    done = complete_shards(output)
    assert done, "no shard fit: make the disk larger than one shard"
    ShardReader(output)  # the completed shards are valid
    assert not list(Path(output).rglob("*.tmp"))  # no half-written file left behind
    make_space()
    assert main(args) == 0, capsys.readouterr().err
    _check_exactly_once(output, _config(output, per_group=100, shard_size=25, size=64))


@pytest.mark.slow
def test_training_through_a_resetting_proxy_completes(s3_bucket, proxy):
    """FFR on colored digits with its synthetic shards, checkpoints and results on S3 behind the 10 %-reset proxy:
    reads (tar ranges), checkpoint writes and result files all retry and the run finishes with a test WGA.
    ``executor: local`` trains in this process, so every S3 request really crosses the proxy."""
    from ffr import runs
    from ffr.training import run_experiment

    synthetic = f"{s3_bucket}/digits"
    assert generate(_config(synthetic, per_group=300, shard_size=600, runner="local"))["complete"]
    before = proxy.injected.resets
    result = run_experiment({"dataset": "colored-digits", "dataset_options": {"bias_ratio": 0.95}, "variant": "ffr",
                             "synthetic_root": synthetic, "method": "erm", "backbone": "small-cnn",
                             "pretrained": None, "image_size": 32, "epochs": 1, "stage1": {"epochs": 1},
                             "batch_size": 128, "executor": "local", "cache_in_memory": True,
                             "storage_path": f"{s3_bucket}/runs"})
    assert proxy.injected.resets > before, proxy.injected  # training's own requests met resets
    assert 0.0 <= result["test"]["worst_group_acc"] <= 1.0
    proxy.reset_rate = 0.0
    assert runs.read_result(runs.run_dir(f"{s3_bucket}/runs", result["run_name"])) is not None
