"""One trainer per shared run directory: FFR's stage 1 is shared by every method, trial and job of the same seed
and stage-1 setting, so runs reaching it at once must not both train it (ffr/training/stage_lease.py)."""

from __future__ import annotations

import threading
import time

import pytest

from ffr import runs
from ffr.errors import FFRError
from ffr.training import stage_lease
from ffr.training.config import parse, pretrain_stage


def test_a_lease_is_exclusive_renewable_and_expires(ray_cluster):
    table = stage_lease.RunLeases.remote()  # a private table, not the cluster's

    def acquire(holder, ttl=0.5, renewing=False):
        return ray_cluster.get(table.acquire.remote("run", holder, ttl, renewing))

    assert acquire("a") is None and acquire("b") == "a"
    assert acquire("a") is None  # its own renewal
    assert acquire("b", renewing=True) == "a"  # a renewal never takes another holder's lease
    ray_cluster.get(table.release.remote("run", "b"))  # not b's to release
    assert acquire("b") == "a"
    time.sleep(0.7)  # a stopped renewing (died): the lease expires
    assert acquire("b") is None and acquire("a") == "b"
    ray_cluster.get(table.release.remote("run", "b"))
    assert acquire("a") is None


def test_holders_of_one_name_never_overlap_and_the_waiter_says_why(ray_cluster):
    spans, lines = [], []

    def body(k):
        with stage_lease.hold(f"/runs/shared-{id(spans)}", "shared", log=lines.append, poll_s=0.05):
            start = time.monotonic()
            time.sleep(0.5)
            spans.append((start, time.monotonic()))

    threads = [threading.Thread(target=body, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spans.sort()
    assert len(spans) == 3 and all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    assert len(lines) == 2 and all(line.startswith("[shared] being trained by another run") for line in lines)


def test_the_table_outlives_the_placement_group_of_the_trial_that_created_it(ray_cluster):
    """Tune trials capture their children into the trial's placement group; the table must not be one of them
    (it was: it died with the first trial's group and never answered again, so every later stage 1 hung)."""
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    def table_exists() -> bool:
        try:
            ray_cluster.get_actor(stage_lease.ACTOR_NAME, namespace=stage_lease.NAMESPACE)
            return True
        except ValueError:
            return False

    if table_exists():  # start from no table, so the trial below creates it
        ray_cluster.kill(ray_cluster.get_actor(stage_lease.ACTOR_NAME, namespace=stage_lease.NAMESPACE),
                         no_restart=True)
        deadline = time.monotonic() + 30
        while table_exists():  # the kill is asynchronous: wait until the name is free
            assert time.monotonic() < deadline, "the old lease table did not go away"
            time.sleep(0.1)

    @ray_cluster.remote(num_cpus=1)
    class Trial:
        def take(self, name):
            return ray_cluster.get(stage_lease.leases().acquire.remote(name, "trial", 600.0))

    group = placement_group([{"CPU": 1}])
    ray_cluster.get(group.ready(), timeout=60)
    trial = Trial.options(scheduling_strategy=PlacementGroupSchedulingStrategy(
        group, placement_group_capture_child_tasks=True)).remote()
    name = f"/runs/trial-{time.time_ns()}"
    assert ray_cluster.get(trial.take.remote(name), timeout=60) is None
    remove_placement_group(group)  # the trial ends
    time.sleep(1)
    table = stage_lease.leases()
    assert ray_cluster.get(table.acquire.remote(name, "next", 600.0), timeout=30) == "trial"  # alive, and remembers


def test_an_unreachable_table_is_one_line_not_a_hang(ray_cluster, monkeypatch):
    @ray_cluster.remote(num_cpus=0)
    def never():
        time.sleep(3600)

    monkeypatch.setattr(stage_lease, "ANSWER_S", 0.5)
    ref = never.remote()
    with pytest.raises(FFRError, match=r"run lease table .* did not answer in 0.5 s"):
        stage_lease._ask(ref)
    ray_cluster.cancel(ref, force=True)


def test_without_ray_the_body_runs_at_once(monkeypatch):
    monkeypatch.setattr(stage_lease.ray, "is_initialized", lambda: False)
    with stage_lease.hold("/runs/x"):
        pass


@pytest.mark.slow
def test_two_methods_starting_at_once_train_ffr_stage1_once(ray_cluster, tmp_path):
    """ERM and GroupDRO on the same FFR stage 1, started together in two Ray tasks (as two sweep trials or two
    submitted jobs are): stage 1 is trained by one, for its epochs exactly once, and both start from it."""
    import pipelines
    from ffr.training import run_experiment

    synthetic = str(tmp_path / "synthetic")
    pipelines.generate({"recipe": "colored-digits", "output": synthetic, "seed": 0, "budget": {"per_group": 240},
                        "shard_size": 1000, "batch_size": 256, "runner": "local", "progress": False})
    base = {"dataset": "colored-digits", "variant": "ffr", "synthetic_root": synthetic, "backbone": "small-cnn",
            "backbone_options": {"width": 8}, "pretrained": None, "image_size": 16, "cache_in_memory": True,
            "epochs": 1, "batch_size": 256, "stage1": {"epochs": 6}, "executor": "local",
            "storage_path": str(tmp_path / "runs"), "mlflow": {"enabled": False}}

    @ray_cluster.remote(num_cpus=1, max_retries=0)
    def train(method):
        return run_experiment({**base, "method": method})

    erm, groupdro = ray_cluster.get([train.remote("erm"), train.remote("groupdro")], timeout=600)

    stage1_dir = runs.run_dir(base["storage_path"], pretrain_stage(parse({**base, "method": "erm"})).run_name)
    assert erm["stage1"]["run_name"] == groupdro["stage1"]["run_name"] == stage1_dir.rsplit("/", 1)[-1]
    records = runs.read_metrics(stage1_dir)
    assert [r["epoch"] for r in records] == list(range(1, 7))  # trained once: no epoch twice, no second attempt
    assert {r["attempt_start_epoch"] for r in records} == {1}
    assert erm["init_checkpoint"] == groupdro["init_checkpoint"] == erm["stage1"]["checkpoint"]
