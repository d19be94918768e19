"""Resolve once, ship the plan: the driver lists and indexes the data once and writes plan.parquet into the run
directory; Ray Train workers, the evaluation task and JTT's task read only that (ffr/training/plan.py)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from ffr import runs
from ffr.storage import filesystem
from ffr.training import plan, run_experiment
from ffr.training.config import method_stage, parse
from ffr.training.data import load_experiment_data

TINY = {"dataset": "colored-digits", "dataset_options": {"bias_ratio": 0.95}, "backbone": "small-cnn",
        "backbone_options": {"width": 8}, "pretrained": None, "image_size": 32, "cache_in_memory": True,
        "epochs": 1, "batch_size": 128, "lr": 3e-3, "num_workers": 1, "max_failures": 0,
        "controller_failure_limit": 2}


def _generate(output: str) -> str:
    import pipelines

    pipelines.generate({"recipe": "colored-digits", "output": output, "seed": 0, "budget": {"per_group": 530},
                        "shard_size": 1100, "batch_size": 256, "runner": "local", "progress": False})
    return output


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> str:
    return _generate(str(tmp_path_factory.mktemp("synthetic")))


def _assert_same(read, written) -> None:
    assert read.name == written.name and read.spec == written.spec
    pd.testing.assert_frame_equal(read.table, written.table)
    keys = written.table["key"].astype(str)
    for key in (keys.iloc[0], keys.iloc[len(keys) // 2], keys.iloc[-1]):
        assert np.array_equal(np.asarray(read.load_image(key)), np.asarray(written.load_image(key)))


@pytest.mark.parametrize("variant,stage", [("usb", 2), ("ffr", 1), ("ffr", 2)])
def test_plan_round_trip_reproduces_every_table_and_image(synthetic_root, tmp_path, variant, stage):
    cfg = parse({**TINY, "variant": variant, "synthetic_root": synthetic_root})
    data = load_experiment_data(cfg)
    path = plan.write_plan(str(tmp_path), data, stage)
    assert path == str(tmp_path / plan.PLAN) and sorted(p.name for p in tmp_path.iterdir()) == [plan.PLAN]
    read = plan.read_plan(path)
    assert set(read.real) == {"train", "val", "test"} and list(read.stages) == [stage]
    for name in read.real:
        _assert_same(read.real[name], data.real[name])
    _assert_same(read.stages[stage].train, data.stages[stage].train)
    assert read.stages[stage].train_spec == data.stages[stage].train_spec
    # every stage's plan carries the experiment's held-out synthetic images, for the (B, G) diagnostic
    assert data.heldout is not None and len(data.heldout) > 0
    _assert_same(read.heldout, data.heldout)
    rows = pd.read_parquet(path)
    synthetic = rows[(rows["source"] == 1) & (rows["@table"] != plan.HELDOUT)]
    # Shard images carry their tar member's address: workers read them by byte range, no tar indexing.
    assert len(synthetic) == int((read.stages[stage].train.source == 1).sum())
    if (variant, stage) == ("ffr", 2):  # FFR's stage 2 trains on real data only: no shard image to train on
        assert len(synthetic) == 0
    else:
        assert synthetic["@offset"].notna().all() and synthetic["@tar"].str.endswith(".tar").all()


def test_plan_on_s3_and_a_missing_plan(s3_bucket):
    from ffr.errors import FFRError

    data = load_experiment_data(parse(TINY))
    path = plan.write_plan(f"{s3_bucket}/run", data, 2)
    _assert_same(plan.read_plan(path).stages[2].train, data.stages[2].train)
    with pytest.raises(FFRError, match="run plan .* does not exist"):
        plan.read_plan(f"{s3_bucket}/elsewhere/{plan.PLAN}")


def _counts(requests, bucket: str) -> dict[str, int]:
    """Requests to the dataset's bucket by kind. A tar read from its first byte indexes its members; an image
    read starts at its member's offset and is not counted (training reads images, that is its job)."""
    counts = {"listings": 0, "tar indexings": 0, "other reads": 0}
    for method, path, query, byte_range in requests:
        if path.strip("/") == bucket and re.search(r"(^|&)(list-type|prefix|delimiter)=", query):
            counts["listings"] += 1
        elif path.endswith(".tar") and path.startswith(f"/{bucket}/"):
            counts["tar indexings"] += byte_range is None or byte_range.startswith("bytes=0-")
        elif path.startswith(f"/{bucket}/") and method in ("GET", "HEAD"):
            counts["other reads"] += 1  # groups.json, shard parquets, existence checks
    return counts


@pytest.mark.slow
def test_a_run_lists_and_indexes_its_s3_data_once(ray_cluster, s3_bucket, s3_requests, tmp_path):
    """USB + JTT through Ray Train: identification workers, the misclassified task, stage-2 workers and the
    evaluation task all run on the plan; only the driver's one resolution touches the dataset's bucket."""
    synthetic = _generate(f"{s3_bucket}/synthetic")
    bucket = s3_bucket.removeprefix("s3://")
    config = {**TINY, "variant": "usb", "method": "jtt", "method_hparams": {"identification_epochs": 1},
              "synthetic_root": synthetic, "storage_path": str(tmp_path / "runs"), "executor": "ray-train"}
    s3_requests.clear()
    result = run_experiment(config)
    whole_run = _counts(s3_requests, bucket)
    fs, inner = filesystem(synthetic)
    n_tars = len([p for p in fs.find(inner) if p.endswith(".tar")])

    fs.invalidate_cache()  # no listing cached by this process: a resolution from scratch
    s3_requests.clear()
    load_experiment_data(parse(config))  # one resolution, as the driver does it
    once = _counts(s3_requests, bucket)
    print(f"whole run: {whole_run}; one resolution: {once}; {n_tars} tars")
    # The whole run (identification workers, misclassified task, stage-2 workers, evaluation task) asks no
    # more of the dataset's storage than one resolution does (before the plan: 8 listings, 10 tar indexings).
    assert whole_run["tar indexings"] == once["tar indexings"] == n_tars >= 2
    assert 1 <= whole_run["listings"] <= once["listings"] and whole_run["other reads"] <= once["other reads"]
    directory = runs.run_dir(config["storage_path"], method_stage(parse(config)).run_name)
    assert plan.read_plan(plan.plan_path(directory)).stages[2].train_spec.with_source
    assert result["method"] == "jtt" and 0.0 <= result["test"]["worst_group_acc"] <= 1.0


@pytest.mark.filterwarnings("ignore:utk-face. skipped")
def test_every_dataset_and_image_source_survives_the_plan(tmp_path):
    """Walks every registered dataset (tests/dataset_fixtures.py) through write_plan / read_plan; together
    they must use every registered kind of image loader (ffr.datasets.base.IMAGE_SOURCES)."""
    from dataset_fixtures import FIXTURES

    import ffr.datasets as datasets
    from ffr.datasets.base import IMAGE_SOURCES, PartLoader
    from ffr.training.data import ExperimentData
    from ffr.variants import StageData

    kinds = set()
    for name in datasets.DATASETS.names():
        (tmp_path / name).mkdir()
        splits = datasets.create(name, **FIXTURES[name](tmp_path / name))
        if len(splits["val"]) == 0:  # synthetic is all train: hold its last rows out so every table has rows
            whole, n = splits["train"], len(splits["train"])
            splits = {"train": whole.subset(np.arange(n - 4)), "val": whole.subset(np.arange(n - 4, n - 2)),
                      "test": whole.subset(np.arange(n - 2, n))}
        train = splits["train"]
        data = ExperimentData(splits, {2: StageData(2, train, train.spec)})
        read = plan.read_plan(plan.write_plan(str(tmp_path / name / "run"), data, 2))
        for split in splits:
            _assert_same(read.real[split], splits[split])
        loaders = [s.load_image for s in splits.values()]
        kinds |= {loader.to_plan([])[0]["kind"] for loader in loaders if not isinstance(loader, PartLoader)}
    assert kinds == set(IMAGE_SOURCES.names())
