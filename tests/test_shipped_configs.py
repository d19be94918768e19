"""Every shipped config, the way a user runs it: from a fresh working directory holding ``configs/`` (as a clone
does), with the relative paths as written, through Ray where the config says Ray. Only sizes are shrunk
(epochs, budgets, a sweep's grid). Configs that need real data, weights or a GPU cluster are planned instead
(``--show-config`` must work). ``test_every_shipped_config_is_run_or_planned`` keeps the two lists complete.

The colored-digits sweep (configs/sweep-colored-digits.yaml) runs the same way in tests/test_tune.py.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from ffr import runs, tracking
from ffr.cli import main

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p.name for p in (REPO / "configs").glob("*.yaml"))
RUN = {  # config → the test that runs it
    "generate-colored-digits.yaml": "synthetic (fixture)",
    "train-colored-digits-none.yaml": "test_train_none_in_process_and_on_ray_train",
    "train-colored-digits-usb.yaml": "test_train_usb_asb_ffr_on_what_generate_wrote",
    "train-colored-digits-asb.yaml": "test_train_usb_asb_ffr_on_what_generate_wrote",
    "train-colored-digits-ffr.yaml": "test_train_usb_asb_ffr_on_what_generate_wrote",
    "sweep-ablation-colored-digits.yaml": "test_ablation_sweep_on_what_generate_wrote",
    "sweep-colored-digits.yaml": "tests/test_tune.py::test_shipped_asha_sweep_then_report_and_mlflow",
    "train-folder-none.yaml": "test_folder_config_on_a_folder_of_ones_own",
}
RUNTIME_ENV = "runtime-env.yaml"  # not a command's config: `ray job submit --runtime-env` (tests/test_job_submit.py)


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory) -> Path:
    """A fresh working directory with the shipped configs, as a clone has them."""
    root = tmp_path_factory.mktemp("user")
    shutil.copytree(REPO / "configs", root / "configs")
    return root


@pytest.fixture(scope="module")
def synthetic(user_dir, ray_cluster) -> Path:
    """``ffr generate --config configs/generate-colored-digits.yaml`` as written (500 images per group through
    Ray Data): it writes demo_out/synthetic/seed-0 under the working directory, where the train configs look."""
    with contextlib.chdir(user_dir):
        assert main(["generate", "--config", "configs/generate-colored-digits.yaml", "progress=false"]) == 0
    out = user_dir / "demo_out" / "synthetic" / "seed-0"
    assert json.loads((out / "summary.json").read_text())["complete"]
    return out


def _train(user_dir: Path, capsys, *args: str) -> tuple[dict, str]:
    """``ffr train ARGS`` in the user's directory: (the run's result file, what it printed)."""
    with contextlib.chdir(user_dir):
        rc = main(["train", *args])
    out, err = capsys.readouterr()
    assert rc == 0, out + err
    summary = json.loads(out.strip().splitlines()[-1])
    run_dir = Path(summary["run_dir"])
    assert run_dir.is_relative_to(user_dir), run_dir  # relative paths name places in the launch directory
    result = runs.read_result(str(run_dir))
    assert result is not None and 0.0 <= result["test"]["worst_group_acc"] <= 1.0
    return result, out


def test_train_none_in_process_and_on_ray_train(user_dir, ray_cluster, capsys):
    from test_train_console_and_mlflow import assert_console_epoch_is_best_epoch

    # As written: executor auto picks this process (one CPU worker, no GPU) and says so once.
    result, out = _train(user_dir, capsys, "--config", "configs/train-colored-digits-none.yaml", "epochs=3")
    lines = out.splitlines()
    assert [line for line in lines if line.startswith("executor:")] == [
        "executor: local (auto: one CPU worker, no GPU; executor=ray-train trains on Ray Train)"]
    assert_console_epoch_is_best_epoch(lines, result["best_epoch"], result["best_val_worst_group_acc"])
    run_dir = user_dir / "runs" / result["run_name"]
    assert (run_dir / runs.checkpoint_name(result["best_epoch"]) / runs.CHECKPOINT_FILE).exists()
    assert (user_dir / "runs" / "mlflow.db").exists()

    # Through Ray Train with the same relative paths: its workers run in another working directory, and must
    # still read the plan the driver wrote and write their checkpoints here.
    on_ray, out = _train(user_dir, capsys, "--config", "configs/train-colored-digits-none.yaml", "epochs=1",
                         "executor=ray-train", "storage_path=runs/on-ray-train")
    assert "executor:" not in out  # chosen in the command: nothing to say
    run_dir = user_dir / "runs" / "on-ray-train" / on_ray["run_name"]
    assert on_ray["run_name"] == method_run_name(user_dir, "configs/train-colored-digits-none.yaml", "epochs=1")
    assert [r["epoch"] for r in runs.read_metrics(str(run_dir))] == [1]  # written by the Ray Train worker
    assert on_ray["checkpoint"] == str(run_dir / runs.checkpoint_name(1))
    assert (run_dir / runs.checkpoint_name(1) / runs.CHECKPOINT_FILE).exists()


def method_run_name(user_dir: Path, config: str, *overrides: str) -> str:
    """The run name a config gets, whatever its executor (an infrastructure field, outside the name)."""
    from ffr.config import load_config
    from ffr.training.config import method_stage, parse, resolve_paths

    with contextlib.chdir(user_dir):
        return method_stage(parse(resolve_paths(load_config(config, list(overrides))))).run_name


def _mlflow_run(user_dir: Path, run_name: str):
    client = tracking.client(f"sqlite:///{user_dir}/runs/mlflow.db")
    (run,) = tracking.runs_named(f"sqlite:///{user_dir}/runs/mlflow.db", "colored-digits", run_name)
    return client.get_run(run.info.run_id)


def test_train_usb_asb_ffr_on_what_generate_wrote(user_dir, synthetic, capsys):
    from ffr.groups import GroupSpec
    from ffr.tracking import metric_key

    real = GroupSpec(("small (0-4)", "large (5-9)"), ("red", "green"))
    for variant in ("usb", "asb", "ffr"):
        result, _ = _train(user_dir, capsys, "--config", f"configs/train-colored-digits-{variant}.yaml", "epochs=1",
                           "stage1.epochs=1")
        run_dir = user_dir / "runs" / result["run_name"]
        record = runs.read_metrics(str(run_dir))[-1]
        metrics = _mlflow_run(user_dir, result["run_name"]).data.metrics
        if variant == "ffr":  # stage 1 trained on synthetic images only, stage 2 on real ones
            stage1_dir = Path(result["init_checkpoint"]).parent  # stage 2 started from stage 1's best
            assert stage1_dir.parent == user_dir / "runs"
            s1_record = runs.read_metrics(str(stage1_dir))[-1]
            s1_metrics = _mlflow_run(user_dir, stage1_dir.name).data.metrics
            for g, name in enumerate(real.group_names()):
                assert s1_metrics[f"train_draws/{metric_key(name)}/synthetic"] == s1_record[f"train_draws_group_{g}"]
            names = [f"{n}/real" for n in real.group_names()]
        else:  # (class, bias, source) groups: train_draws_group_1 is small/red from the *synthetic* set
            names = real.with_sources().group_names()
            assert names[1] == "small (0-4)/red/synthetic"
        drawn = {k: v for k, v in metrics.items() if k.startswith("train_draws/")}
        assert drawn == {f"train_draws/{metric_key(n)}": float(record[f"train_draws_group_{g}"])
                         for g, n in enumerate(names)}, drawn
        assert not any(k.startswith("train_draws/group ") for k in metrics)


def test_ablation_sweep_on_what_generate_wrote(user_dir, synthetic, capsys):
    """The ablation grid shrunk to one trial (one corruption, one severity, frozen BN) and one seed."""
    with contextlib.chdir(user_dir):
        rc = main(["sweep", "--config", "configs/sweep-ablation-colored-digits.yaml", "seeds=[0]", "train.epochs=1",
                   "train.stage1.epochs=1", "search={stage1.corruption: [grid, [pixelate]], "
                   "stage1.corruption_severity: [grid, [1]], freeze_bn: [grid, [true]]}"])
    out, err = capsys.readouterr()
    assert rc == 0, out + err
    folder = user_dir / "runs" / "sweeps" / "colored-digits-ablation"
    (row,) = pd.read_csv(folder / "sweep_results.csv").to_dict("records")
    assert row["status"] == "finished" and Path(row["run_dir"]) == folder / row["run_name"]
    assert runs.read_result(row["run_dir"])["test"]["worst_group_acc"] >= 0
    config = json.loads((folder / row["run_name"] / runs.CONFIG).read_text())
    assert config["synthetic_root"] == str(synthetic) and config["freeze_bn"] is True
    assert "executor:" not in out  # the config sets executor: local; only a choice made by auto is said
    assert sum(line.startswith("[sweep]") for line in out.splitlines()) == 2  # started, finished
    assert "Configuration for experiment" not in out and "tensorboard" not in out.lower()


def test_folder_config_on_a_folder_of_ones_own(user_dir, capsys):
    """configs/train-folder-none.yaml on a folder in the documented layout (docs/own-data.md), next to the
    configs: only where the data is, and what a CPU runs (the config is written for GPUs, ImageNet weights and
    S3), are set."""
    from dataset_fixtures import FOLDER_CLASS_NAMES, build_folder

    options = build_folder(user_dir / "data", scale=0.5)
    root = Path(options["root"])
    (root / options["metadata"]).rename(root / "metadata.csv")  # the default name the config relies on
    result, _ = _train(user_dir, capsys, "--config", "configs/train-folder-none.yaml",
                       f"dataset_options.root={root.relative_to(user_dir)}", "storage_path=runs/folder",
                       "backbone=small-cnn", "pretrained=null", "image_size=16", "num_workers=1", "use_gpu=false",
                       "loader_workers=0", "epochs=1")
    assert result["group_names"]["0"] == f"{FOLDER_CLASS_NAMES[0]}/day"
    assert Path(result["checkpoint"]).is_relative_to(user_dir / "runs" / "folder")


def test_embedded_d3s_demo_from_a_fresh_directory(user_dir, ray_cluster, capsys):
    """``ffr d3s demo`` with its default, relative --out: generation and evaluation through Ray Data."""
    with contextlib.chdir(user_dir):
        assert main(["d3s", "demo", "--per-group", "1", "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    root = user_dir / "d3s_demo_out"
    assert f"{root}/d3s" in out and f"written under {root}" in out  # where everything went
    assert "{" not in out  # tables, not Python dicts
    assert (root / "eval" / "per_background.csv").exists() and (root / "d3s" / "splits" / "digits").is_dir()


@pytest.mark.parametrize("name", [n for n in SHIPPED if n not in RUN and n != RUNTIME_ENV])
def test_configs_that_need_real_data_or_weights_plan_without_error(name, user_dir, capsys):
    command = name.split("-", 1)[0]
    with contextlib.chdir(user_dir):
        rc = main([command, "--config", f"configs/{name}", "--show-config"])
    out, err = capsys.readouterr()
    assert rc == 0 and err == "", err
    assert "(* = differs from the default)" in out


def test_every_shipped_config_is_run_or_planned():
    from ffr.cluster.runtime_env import build_runtime_env

    commands = {"generate", "train", "sweep"}
    assert all(name.split("-", 1)[0] in commands for name in SHIPPED if name != RUNTIME_ENV), SHIPPED
    assert set(RUN) <= set(SHIPPED)
    assert build_runtime_env(REPO / "configs" / RUNTIME_ENV, environ={})["env_vars"]
