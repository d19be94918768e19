"""A small ``ffr train`` on Ray Train as a user runs it (its own driver process and Ray): what it prints,
that its epoch numbers are the ones recorded, and what it records in MLflow's default sqlite store beside
``storage_path``. (The default executor trains such a run in-process: tests/test_shipped_configs.py.)"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from ffr import tracking

pytestmark = pytest.mark.slow

EPOCHS = 5
# Ray's start-up lines (token auth notice(s), "Connected to" / "Started a local Ray instance", the
# PreemptionWatcher actor notice; see docs/console.md) + one line per epoch + "done" + the MLflow line +
# the JSON summary: about EPOCHS + 7. Ray Train's per-report lines ("Reporting training result N:
# TrainingReport(...)") would add one per epoch and push it over.
MAX_LINES = EPOCHS + 9
ACTOR_PREFIX = re.compile(r"^(\x1b\[\d+m)?\(\w+ pid=\d+\)(\x1b\[0m)? ?")


def _without_tracebacks(lines: list[str]) -> list[str]:
    """Drop the frames of tracebacks that Ray's own actors print when this shared 2-core test machine is
    overloaded ("Failed to send resource request ... safe to ignore") or runs several Ray clusters; the
    one-line message before each traceback stays and counts."""
    kept, in_traceback = [], False
    for line in lines:
        content = ACTOR_PREFIX.sub("", line)
        if content.startswith("Traceback (most recent call last)"):
            in_traceback = True
        elif in_traceback and not content.startswith((" ", "^")):
            in_traceback = False  # the exception line closes the traceback
        else:
            if not in_traceback:
                kept.append(line)
    return kept


EPOCH_LINE = re.compile(r"stage (\d+) epoch (\d+)/\d+ .*val WGA (\d\.\d+)")


def console_epochs(lines: list[str], stage: int = 2) -> dict[int, float]:
    """{epoch number as printed: validation WGA as printed (3 decimals)} of one stage's epoch lines."""
    found = [m for m in map(EPOCH_LINE.search, lines) if m and int(m.group(1)) == stage]
    assert found, "no epoch line"
    return {int(m.group(2)): float(m.group(3)) for m in found}


def assert_console_epoch_is_best_epoch(lines: list[str], best_epoch: int, best_val: float, stage: int = 2) -> None:
    """The run's best_epoch is an epoch the console printed, with the best validation WGA it printed (the
    console rounds to 3 decimals, so among printed equals any may be the best)."""
    printed = console_epochs(lines, stage)
    assert best_epoch in printed, (best_epoch, printed)
    assert printed[best_epoch] == round(best_val, 3) == max(printed.values()), (best_epoch, printed)


def test_small_train_prints_few_lines_and_is_tracked_in_mlflow(tmp_path):
    storage = tmp_path / "runs"
    # As a user runs it: `ffr train` starts its own local Ray (with its dashboard, so Ray Train's state queries
    # work); "local" keeps it from joining the test session's cluster or any other on this machine.
    env = {**os.environ, "RAY_ADDRESS": "local",
           "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    env.pop("MLFLOW_TRACKING_URI", None)
    args = ["dataset=colored-digits", "dataset_options={bias_ratio: 0.95}", "backbone=small-cnn",
            "backbone_options={width: 8}", "pretrained=null", "image_size=16", "cache_in_memory=true",
            f"epochs={EPOCHS}", "batch_size=256", "lr=0.003", f"storage_path={storage}", "max_failures=0",
            "mlflow.tags={api_token: s3cr3t-value}", "executor=ray-train"]
    done = subprocess.run([sys.executable, "-m", "ffr.cli", "train", *args], env=env, capture_output=True,
                          text=True, timeout=400)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    lines = _without_tracebacks([line for line in output.splitlines() if line.strip()])
    assert "Reporting training result" not in output
    assert len(lines) <= MAX_LINES, "\n".join(lines)
    assert sum("stage 2 epoch" in line for line in lines) == EPOCHS  # our epoch line, once each
    assert not any("Deprecat" in line for line in lines), "\n".join(lines)  # no deprecation warning of ffr's
    uri = f"sqlite:///{storage}/mlflow.db"
    assert f"MLflow: mlflow ui --backend-store-uri {uri}" in lines
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    # One numbering: the epoch the console shows with the best validation WGA (the earliest on a tie) is the
    # run's best_epoch, in the summary, the "done" line, the result file, the checkpoint name and MLflow.
    best_epoch = summary["best_epoch"]
    assert_console_epoch_is_best_epoch(lines, best_epoch, summary["best_val_worst_group_acc"])
    assert any(f"done: best epoch {best_epoch}," in line for line in lines)
    result = json.loads((storage / summary["run_name"] / "ffr_result.json").read_text())
    assert result["checkpoint"].endswith(f"checkpoint_epoch{best_epoch:04d}")

    client = tracking.client(uri)
    experiment = client.get_experiment_by_name("colored-digits")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == summary["run_name"] and run.info.status == "FINISHED"
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    assert {k: tags[k] for k in tracking.TAG_KEYS} == {"dataset": "colored-digits", "variant": "none",
                                                       "method": "erm", "stage": "2", "seed": "0"}
    assert params["dataset_options.bias_ratio"] == "0.95" and params["stage1.lr"] == "0.0001"
    assert float(params["lr"]) == 0.003 and params["epochs"] == str(EPOCHS)
    assert "s3cr3t-value" not in json.dumps([tags, params])
    history = client.get_metric_history(run.info.run_id, "val_acc/small 0-4/green")
    assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1))  # MLflow steps are the epoch numbers
    assert metrics["test_worst_group_acc"] == pytest.approx(summary["test_worst_group_acc"])
    assert metrics["best_epoch"] == best_epoch
    wga = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_worst_group_acc")}
    assert sorted(wga) == sorted(console_epochs(lines)) and wga[best_epoch] == max(wga.values())
    assert metrics["test_n/large 5-9/red"] > 0 and "test_acc/large 5-9/red" in metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.json", "metrics.jsonl", "ffr_result.json", "val_wga_curve.png", "test_group_acc.png"} <= artifacts
