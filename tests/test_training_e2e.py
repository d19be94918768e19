"""colored-digits end to end on a real local Ray cluster: FFR stage 1 on synthetic data (2 DDP workers),
stage 2 with every registered method, worker failure recovery, and resume on S3 after the driver died."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

import ffr.methods
from ffr import runs
from ffr.cli import main
from ffr.methods.dfr import C_GRID
from ffr.storage import filesystem, join
from ffr.training import run_experiment
from ffr.training.config import parse, pretrain_stage
from ffr.training.data import load_experiment_data
from ffr.training.experiment import run_stage_job

pytestmark = pytest.mark.slow

TINY = {"dataset": "colored-digits", "dataset_options": {"bias_ratio": 0.95}, "backbone": "small-cnn",
        "backbone_options": {"width": 8}, "pretrained": None, "image_size": 32, "cache_in_memory": True,
        "epochs": 2, "batch_size": 128, "lr": 3e-3, "stage1": {"epochs": 2, "lr": 3e-3},
        "num_workers": 1, "max_failures": 0, "controller_failure_limit": 2,
        "executor": "ray-train"}  # this module is about Ray Train (auto would train one CPU worker in-process)


@pytest.fixture(scope="module")
def ffr_setup(ray_cluster, tmp_path_factory):
    """The synthetic side from the colored-digits recipe, and one FFR stage 1 trained by 2 DDP workers."""
    import pipelines

    synthetic = str(tmp_path_factory.mktemp("synthetic"))
    pipelines.generate({"recipe": "colored-digits", "output": synthetic, "seed": 0, "budget": {"per_group": 300},
                        "shard_size": 600, "batch_size": 256, "runner": "local", "progress": False})
    config = {**TINY, "variant": "ffr", "synthetic_root": synthetic,
              "storage_path": str(tmp_path_factory.mktemp("runs"))}
    cfg = parse({**config, "num_workers": 2})
    stage1 = run_stage_job(cfg, pretrain_stage(cfg), load_experiment_data(cfg))
    return config, stage1


def _best_record(records: list[dict]) -> dict:
    return max(records, key=lambda r: (r["val_worst_group_acc"], -r["epoch"]))


def _check_run_dir(result: dict, epochs: int) -> list[dict]:
    directory = runs.run_dir(result["storage_path"], result["run_name"])
    fs, inner = filesystem(directory)
    for name in (runs.CONFIG, runs.SPLITS, runs.RESULT):
        assert fs.exists(join(inner, name)), name
    records = runs.read_metrics(directory)
    assert [r["epoch"] for r in records] == list(range(1, epochs + 1))  # numbered from 1, as on the console
    best = _best_record(records)
    # The checkpoint with the best validation WGA is the result, and it is the one evaluated.
    assert result["best_epoch"] == best["epoch"]
    assert result["checkpoint"].rstrip("/").endswith(f"checkpoint_epoch{best['epoch']:04d}")
    assert result["best_val_worst_group_acc"] == best["val_worst_group_acc"]
    return records


def test_stage1_trains_on_balanced_synthetic_data_with_two_workers(ffr_setup):
    config, stage1 = ffr_setup
    assert stage1["stage"] == 1 and stage1["method"] == "erm"
    records = _check_run_dir(stage1, 2)
    assert stage1["val"]["worst_group_acc"] == _best_record(records)["val_worst_group_acc"]
    splits = runs.run_dir(stage1["storage_path"], stage1["run_name"])
    with filesystem(splits)[0].open(filesystem(join(splits, runs.SPLITS))[1], "rb") as f:
        import pandas as pd

        table = pd.read_parquet(f)
    train = table[table["split"] == "train"]
    assert (train["source"] == 1).all() and train.groupby(["y", "b"]).size().nunique() == 1  # k per group
    assert set(table[table["split"] != "train"]["source"]) == {0}


@pytest.mark.parametrize("method", ffr.methods.names())
def test_stage2_from_stage1_with_each_method(ffr_setup, method):
    config, stage1 = ffr_setup
    workers = 2 if method == "resample" else 1  # one real 2-worker check of distributed resampling
    # disentangle's defaults are D3S's ResNet-50 sizes (250 bg features); the small CNN here pools 32
    hparams = {"bg_features": 8, "warmup_steps": 2, "probe": {"steps": 20}} if method == "disentangle" else {}
    result = run_experiment({**config, "method": method, "num_workers": workers, "method_hparams": hparams})
    assert result["stage1"]["run_name"] == stage1["run_name"]  # finished stage 1 is reused, not retrained
    assert result["init_checkpoint"] == stage1["checkpoint"]
    assert result["stage"] == 2 and result["method"] == method and result["variant"] == "ffr"
    records = _check_run_dir(result, 2)
    best_wga = _best_record(records)["val_worst_group_acc"]
    assert set(result["group_names"].values()) == {"small (0-4)/red", "small (0-4)/green", "large (5-9)/red",
                                                   "large (5-9)/green"}
    assert {f"acc_group_{g}" for g in range(4)} <= set(result["test"])
    if method == "dfr":  # a new last layer on the best model's features; the backbone's own numbers are kept
        assert result["base_val"]["worst_group_acc"] == best_wga
        assert result["dfr"]["best_c"] in C_GRID
    else:
        assert result["val"]["worst_group_acc"] == best_wga
    if method == "jtt":
        ident = runs.read_json(join(runs.run_dir(result["storage_path"], result["run_name"]), "identification",
                                      "identification.json"))
        assert ident["n_train"] == len(ident["error_set"]) and 0 < ident["n_errors"] < ident["n_train"]
        assert records[0]["train_draws"] == ident["n_train"] + 5 * ident["n_errors"]  # upweight 6
    if method == "resample":
        n = records[0]["train_draws"]
        for r in records:
            assert r["train_draws"] == n  # N draws in total over both workers, not N per worker
            freq = np.array([r[f"train_draws_group_{g}"] for g in range(4)]) / n
            assert np.allclose(freq, 0.25, atol=0.05), freq


def test_dfr_on_a_given_trained_model_without_training(ffr_setup):
    config, stage1 = ffr_setup
    stage1_dir = runs.run_dir(stage1["storage_path"], stage1["run_name"])
    result = run_experiment({**config, "variant": "none", "synthetic_root": None, "method": "dfr", "epochs": 0,
                             "init_checkpoint": stage1_dir})  # a run directory resolves to its best checkpoint
    assert result["checkpoint"] == stage1["checkpoint"] and result["best_epoch"] is None
    assert result["base_val"]["worst_group_acc"] == stage1["val"]["worst_group_acc"]
    assert result["dfr"]["best_c"] in C_GRID and 0.0 <= result["test"]["worst_group_acc"] <= 1.0


def test_killed_worker_resumes_from_its_last_checkpoint(ray_cluster, tmp_path):
    marker = tmp_path / "killed"
    result = run_experiment({**TINY, "epochs": 3, "num_workers": 2, "max_failures": 1, "storage_path": str(tmp_path),
                             "fault_injection": {"kill_at_epoch": 2, "marker": str(marker), "rank": 1,
                                                 "after_batches": 2}})
    assert marker.exists()  # the worker really died mid-epoch 2
    records = _check_run_dir(result, 3)
    # Epoch 1 ran in the first attempt; the restarted workers began at epoch 2, from epoch 1's checkpoint.
    assert [r["attempt_start_epoch"] for r in records] == [1, 2, 2]


def test_rerun_after_driver_death_resumes_on_s3(ray_cluster, s3_bucket, tmp_path, capsys):
    config = {**TINY, "method": "reweight", "storage_path": f"{s3_bucket}/runs"}
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    kill = "fault_injection={kill_at_epoch: 2, marker: %s, after_batches: 1}" % (tmp_path / "killed")
    from ray.train import TrainingFailedError

    with pytest.raises(TrainingFailedError):  # no failures allowed: it dies after epoch 1's checkpoint, like a driver
        main(["train", "--config", str(path), kill])
    assert main(["train", "--config", str(path)]) == 0  # the same command again
    summary = yaml.safe_load(capsys.readouterr().out.strip().splitlines()[-1])
    result = runs.read_result(summary["run_dir"])
    assert result["checkpoint"].startswith(f"{s3_bucket}/runs/")
    records = _check_run_dir(result, 2)
    assert [r["attempt_start_epoch"] for r in records] == [1, 2]  # resumed, did not start over
    assert main(["train", "--config", str(path)]) == 0  # finished: reported again, not retrained
    assert "already finished" in capsys.readouterr().out
