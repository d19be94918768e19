"""D3S's disentanglement trained through ``ffr train``'s own loop: mixed batches from the embedded D3S and a
class-only ImageNet-layout folder, step-based epochs, every loss term per step in the run and in MLflow,
checkpoints that resume the schedule, probes in the result, MLflow and ``ffr report``; and once on Ray Train
with two DDP workers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import pipelines
from ffr import runs, tracking
from ffr.d3s.embedded import generation_config, write_foregrounds, write_plain_set
from ffr.training import loop, run_experiment

TERMS = {"critic_fg_loss", "critic_bg_loss", "dependence_fg", "dependence_bg", "gradient_penalty_fg",
         "gradient_penalty_bg", "ce_class", "ce_background", "loss"}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("world")
    fg = write_foregrounds(root, per_class=2, size=16)
    plain = write_plain_set(root, fg, "train", per_class=3, size=16)
    d3s = str(root / "d3s")
    pipelines.generate(generation_config(d3s, fg, per_group=2, templates=1, size=16, runner="local", shard_size=200))
    return {"d3s": d3s, "plain": plain}


def _config(world: dict, storage: Path, **over) -> dict:
    return {"dataset": "d3s", "dataset_options": {"root": world["d3s"], "val_fraction": 0.3},
            "mix": {"dataset": "class-folder", "dataset_options": {"root": world["plain"]}, "batch_size": 8},
            "method": "disentangle", "backbone": "small-cnn", "backbone_options": {"width": 4}, "pretrained": None,
            "image_size": 16, "batch_size": 8, "optimizer": "sgd", "lr": 1e-3, "epochs": 2, "steps_per_epoch": 6,
            "cache_in_memory": True, "executor": "local", "storage_path": str(storage),
            "method_hparams": {"bg_features": 4, "warmup_steps": 3, "probe": {"steps": 50}}, **over}


def test_disentangle_trains_step_based_logs_every_term_resumes_and_reports_probes(world, tmp_path, capsys):
    config = _config(world, tmp_path, run_name="dis")
    # One epoch, as if the run had stopped there (no result file), untracked; then the full run resumes it.
    first = run_experiment({**config, "epochs": 1, "mlflow": {"enabled": False}})
    directory = runs.run_dir(str(tmp_path), first["run_name"])
    state = loop.load_state(runs.checkpoint_dir(directory, 1))
    assert state["method"] == {"step": 6, "train_critics": True}  # 4-5 critic (5 % 5 == 0), 6 model: critics next
    assert {"critic_fg", "critic_bg", "model"} <= set(state["method_optimizers"])
    assert state["method_modules"]["critic_fg"]["embedding"].shape == (10, 2)  # int(0.2 * 12 fg features)

    (Path(directory) / runs.RESULT).unlink()
    result = run_experiment(config)
    records = runs.read_metrics(directory)
    assert [r["epoch"] for r in records] == [1, 2] and records[1]["attempt_start_epoch"] == 2
    assert [r["train_steps"] for r in records] == [6, 12]
    assert all(r["train_draws"] == 6 * 8 and r["train_mix_draws"] == 6 * 8 for r in records)
    assert loop.load_state(runs.checkpoint_dir(directory, 2))["method"]["step"] == 12  # the count survived

    steps = runs.read_steps(directory)
    assert [s["step"] for s in steps] == list(range(1, 13))
    assert [s["phase"] for s in steps] == [0, 0, 0, 1, 1, 2, 1, 1, 1, 1, 2, 1]
    assert TERMS <= {k for s in steps for k in s}

    probes = result["probes"]
    assert set(probes) == {"class_from_fg", "background_from_bg", "class_from_bg", "background_from_fg"}
    assert probes["background_from_fg"]["chance"] == 0.1 and probes["class_from_bg"]["chance"] == 0.1
    assert all(0.0 <= p["val"] <= 1.0 and 0.0 <= p["test"] <= 1.0 for p in probes.values())

    uri = tracking.tracking_uri(tracking.MLflowConfig(), str(tmp_path))
    client = tracking.client(uri)
    (run,) = tracking.runs_named(uri, "d3s", result["run_name"])
    history = client.get_metric_history(run.info.run_id, "step/dependence_fg")  # epoch 2's steps: 7-12
    assert sorted(m.step for m in history) == [s["step"] for s in steps if "dependence_fg" in s and s["step"] > 6]
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "step/ce_class")) == list(range(7, 13))
    assert run.data.metrics["probe/background_from_fg/val"] == pytest.approx(probes["background_from_fg"]["val"])

    from ffr.cli import main

    capsys.readouterr()
    assert main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "background_from_fg (chance 10.0)" in out and f"{100 * probes['class_from_bg']['val']:.1f}" in out


@pytest.mark.slow
def test_disentangle_on_ray_train_with_two_ddp_workers(world, tmp_path, ray_cluster):
    config = _config(world, tmp_path, executor="ray-train", num_workers=2, epochs=1, steps_per_epoch=8,
                     max_failures=0)
    result = run_experiment(config)
    directory = runs.run_dir(str(tmp_path), result["run_name"])
    (record,) = runs.read_metrics(directory)
    assert record["train_steps"] == 8 and record["train_draws"] == 8 * 8 and record["train_mix_draws"] == 8 * 8
    steps = runs.read_steps(directory)
    assert [s["phase"] for s in steps] == [0, 0, 0, 1, 1, 2, 1, 1]
    state = loop.load_state(result["checkpoint"])
    assert state["method"]["step"] == 8 and set(state["method_modules"]) == {"critic_fg", "critic_bg"}
    assert json.loads(json.dumps(result["probes"])) == result["probes"]
    uri = tracking.tracking_uri(tracking.MLflowConfig(), str(tmp_path))
    (run,) = tracking.runs_named(uri, "d3s", result["run_name"])
    assert len(tracking.client(uri).get_metric_history(run.info.run_id, "step/loss")) == 4  # warm-up + model steps
