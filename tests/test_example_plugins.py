"""A new stage-2 method (with a preliminary run), a new data variant and a method with a critic are each one
module plus registration (tests/fixtures/): trained here end to end through the real orchestration."""

import dataclasses
import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ffr import runs
from ffr.methods import METHODS
from ffr.storage import filesystem, join
from ffr.training import local, loop, plan
from ffr.training.config import method_stage, parse
from ffr.training.data import load_experiment_data
from ffr.training.experiment import run_experiment
from ffr.variants import VARIANTS

TINY = {"dataset": "colored-digits", "backbone": "small-cnn", "backbone_options": {"width": 8}, "pretrained": None,
        "image_size": 32, "epochs": 1, "batch_size": 128, "cache_in_memory": True, "executor": "local",
        "mlflow": {"enabled": False}}
PLUGINS = ("fixtures.example_method", "fixtures.example_variant", "fixtures.example_critic")


@pytest.fixture
def example_plugins(monkeypatch):
    """Import the example modules (their decorators register them) into copies of the registries, so other
    tests' registry walks never see them."""
    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))
    monkeypatch.setattr(VARIANTS, "_entries", dict(VARIANTS._entries))
    for module in PLUGINS:
        sys.modules.pop(module, None)
        importlib.import_module(module)
    yield
    for module in PLUGINS:
        sys.modules.pop(module, None)


def _read_parquet(path: str) -> pd.DataFrame:
    fs, inner = filesystem(path)
    with fs.open(inner, "rb") as f:
        return pd.read_parquet(f)


def test_example_method_and_variant_train_end_to_end(example_plugins, tmp_path):
    config = {**TINY, "storage_path": str(tmp_path), "variant": "example-balanced-pretrain",
              "method": "example-group-errors", "method_hparams": {"boost": 9.0}}
    result = run_experiment(config)

    # The variant's stage 1 ran first, on its own (balanced) data, and stage 2 started from its best checkpoint.
    stage1 = result["stage1"]
    assert stage1["stage"] == 1 and stage1["run_name"].startswith("colored-digits-example-balanced-pretrain-stage1-")
    assert result["stage"] == 2 and result["init_checkpoint"] == stage1["checkpoint"]
    table = _read_parquet(join(runs.run_dir(str(tmp_path), stage1["run_name"]), runs.SPLITS))
    train1 = table[table["split"] == "train"]
    assert train1.groupby(["y", "b"]).size().nunique() == 1 and (train1["source"] == 0).all()
    # the dry run counts what the variant's build gave (its stage_counts; the preliminary run is a run of its own)
    from ffr.training.cost import estimate_training

    preview = estimate_training(config)
    assert preview.runs[0].draws_per_epoch == len(train1) and set(preview.runs[0].groups.values()) == \
        set(train1.groupby(["y", "b"]).size())
    assert [r.what.split(":")[0] for r in preview.runs] == ["stage 1", "stage 2 example-warmup", "stage 2"]

    # The method's preliminary run: its own sub-run directory, config and marker file.
    main_dir = runs.run_dir(str(tmp_path), result["run_name"])
    warmup = runs.read_json(join(main_dir, "warmup", "config.json"))
    assert (warmup["role"], warmup["method"], warmup["epochs"]) == ("example-warmup", "erm", 1)
    marker = runs.read_json(join(main_dir, "warmup", "warmup.json"))
    rates = np.asarray(marker["group_error_rate"])
    assert rates.shape == (4,) and ((rates >= 0) & (rates <= 1)).all() and rates.max() - rates.min() > 0.05
    assert marker["checkpoint"].startswith(join(main_dir, "warmup"))

    # The main run drew examples with the weights the preliminary result gives (with replacement: ± noise).
    (record,) = runs.read_metrics(main_dir)
    train2 = _read_parquet(join(main_dir, runs.SPLITS)).query("split == 'train'")
    counts = train2.groupby(["y", "b"]).size().to_numpy()  # group id = y * n_bias + b
    expected = record["train_draws"] * counts * (1 + 9.0 * rates) / (counts * (1 + 9.0 * rates)).sum()
    draws = np.array([record[f"train_draws_group_{g}"] for g in range(4)])
    assert np.all(np.abs(draws - expected) <= 5 * np.sqrt(expected) + 5)
    uniform = record["train_draws"] * counts / counts.sum()
    assert np.abs(draws - uniform).max() > 5 * np.sqrt(uniform.max())  # not a plain shuffle

    # Rerunning finds every run done: nothing is trained again.
    again = run_experiment(config)
    assert again["test"] == result["test"] and again["stage1"]["checkpoint"] == stage1["checkpoint"]
    assert len(runs.read_metrics(main_dir)) == 1


def test_a_method_with_a_critic_steps_checkpoints_and_resumes_it(example_plugins, tmp_path):
    cfg = parse({**TINY, "storage_path": str(tmp_path), "method": "example-critic", "epochs": 2})
    spec = method_stage(cfg)
    directory = str(tmp_path / "run")
    stage_plan = plan.write_plan(directory, load_experiment_data(cfg), spec.stage)
    local.fit_stage(cfg, dataclasses.replace(spec, epochs=1), str(tmp_path), directory, plan=stage_plan)
    first = loop.load_state(runs.checkpoint_dir(directory, 1))
    batches = int(first["metrics"]["train_draws"] // -cfg.batch_size * -1)
    assert first["method_optimizers"]["critic"]["state"][0]["step"] == batches  # one critic step per batch
    assert first["method_modules"]["critic"]["weight"].shape == (4, first["model"]["head.weight"].shape[1])

    # resumes: epoch 2 only, critic and its optimiser restored
    local.fit_stage(cfg, spec, str(tmp_path), directory, plan=stage_plan)
    second = loop.load_state(runs.checkpoint_dir(directory, 2))
    assert second["method_optimizers"]["critic"]["state"][0]["step"] == 2 * batches
    assert not torch.equal(second["method_modules"]["critic"]["weight"], first["method_modules"]["critic"]["weight"])
    assert [r["attempt_start_epoch"] for r in runs.read_metrics(directory)] == [1, 2]


def _install_plugins(site) -> None:
    """A distribution as pip leaves it in site-packages: metadata whose entry points name the example modules
    (importable from tests/), so nothing in ffr or in the user's code imports them."""
    info = site / "ffr_example_plugins-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ffr-example-plugins\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[ffr.methods]\nexample-group-errors = fixtures.example_method:GroupErrorUpweight\n\n"
        "[ffr.variants]\nexample-balanced-pretrain = fixtures.example_variant:BalancedPretrain\n")


@pytest.mark.slow
def test_an_installed_plugin_is_found_by_name_in_the_cli_and_in_ray_train_workers(tmp_path):
    _install_plugins(tmp_path / "site")
    env = {**os.environ, "RAY_ADDRESS": "local",  # its own Ray, as a user's `ffr train` starts it
           "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(Path(__file__).parent), os.getcwd()])}
    env.pop("MLFLOW_TRACKING_URI", None)
    args = ["dataset=colored-digits", "backbone=small-cnn", "backbone_options={width: 8}", "pretrained=null",
            "image_size=16", "cache_in_memory=true", "epochs=1", "batch_size=256", f"storage_path={tmp_path / 'runs'}",
            "max_failures=0", "mlflow.enabled=false", "executor=ray-train", "variant=example-balanced-pretrain",
            "method=example-group-errors", "method_hparams={boost: 9.0}"]

    shown = subprocess.run([sys.executable, "-m", "ffr.cli", "train", "--show-config", *args], env=env,
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"method_hparams\.boost\s+4\.0\s+9\.0", shown.stdout), shown.stdout  # the plugin's option

    assert re.search(r"variant\s+\"none\"\s+\"example-balanced-pretrain\"", shown.stdout), shown.stdout

    # Ray Train workers and the preliminary run's evaluation task rebuild the method by name in their own
    # processes: only the entry point tells them where it lives. (Variants are resolved by the driver alone,
    # which --show-config and the in-process test above cover; variant none keeps this to two Ray Train fits.)
    done = subprocess.run([sys.executable, "-m", "ffr.cli", "train", *args, "variant=none"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["variant"] == "none" and summary["method"] == "example-group-errors"
    main_dir = runs.run_dir(str(tmp_path / "runs"), summary["run_name"])
    assert len(runs.read_json(join(main_dir, "warmup", "warmup.json"))["group_error_rate"]) == 4
    (record,) = runs.read_metrics(main_dir)
    assert record["train_draws"] > 0

    # A typo is refused with the registry's one line, which lists the plugin among the choices.
    bad = subprocess.run([sys.executable, "-m", "ffr.cli", "train", "--show-config", *args[:-2],
                          "method=example-group-error"], env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert "unknown stage-2 method 'example-group-error'" in bad.stderr
    assert "example-group-errors" in bad.stderr and "Traceback" not in bad.stderr
