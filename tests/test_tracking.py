"""ffr.tracking without Ray: where runs are tracked, metric keys by group name, and a real sqlite store."""

from __future__ import annotations

import pytest

from ffr import tracking
from ffr.errors import FFRError
from ffr.runs.plots import run_artifacts
from ffr.tracking import MLflowConfig


def test_where_runs_are_tracked(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.tracking_uri(MLflowConfig(), str(tmp_path)) == f"sqlite:///{tmp_path}/mlflow.db"
    assert tracking.tracking_uri(MLflowConfig(), "s3://bucket/runs") is None  # no database on S3
    assert "not tracked" in tracking.ui_line(None)
    assert tracking.tracking_uri(MLflowConfig(enabled=False), str(tmp_path)) is None
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://10.0.0.1:5000")
    assert tracking.tracking_uri(MLflowConfig(), "s3://bucket/runs") == "http://10.0.0.1:5000"
    assert tracking.tracking_uri(MLflowConfig(tracking_uri="sqlite:///x.db"), "runs") == "sqlite:///x.db"
    with pytest.raises(FFRError, match="mlflow.tracking_uri 'mlruns' is not a tracking URI"):
        tracking.tracking_uri(MLflowConfig(tracking_uri="mlruns"), "runs")
    assert tracking.ui_line("http://user:pw@head:5000") == \
        "MLflow: mlflow ui --backend-store-uri http://<redacted>@head:5000"  # no password on the console


def test_group_names_become_metric_keys():
    names = ["small (0-4)/red", "digit>=5/green", "a<b", "x=y"]
    assert [tracking.metric_key(n) for n in names] == ["small 0-4/red", "digit ge 5/green", "a lt b", "x eq y"]
    record = {"stage": 2, "epoch": 1, "train_loss": 0.5, "val_worst_group_acc": 0.25, "val_acc_group_0": 0.9,
              "val_acc_group_1": 0.25, "train_draws_group_1": 12}
    assert tracking.epoch_metrics(record, names) == {
        "train_loss": 0.5, "val_worst_group_acc": 0.25, "val_acc/small 0-4/red": 0.9,
        "val_acc/digit ge 5/green": 0.25, "train_draws/digit ge 5/green": 12.0}
    # USB/ASB count draws by (class, bias, source) groups: train_draws_group_1 is small/red *synthetic*
    usb = ["small (0-4)/red/real", "small (0-4)/red/synthetic", "small (0-4)/green/real"]
    assert tracking.epoch_metrics({"val_acc_group_1": 0.5, "train_draws_group_1": 19}, names[:2], usb) == {
        "val_acc/digit ge 5/green": 0.5, "train_draws/small 0-4/red/synthetic": 19.0}
    result = {"group_names": {"0": names[0]}, "best_epoch": 1, "val": {"worst_group_acc": 0.5, "acc_group_0": 0.5},
              "test": {"worst_group_acc": 0.4, "acc_group_0": 0.4}, "group_sizes": {"test": {"0": 40}, "val": {"0": 9}}}
    assert tracking.final_metrics(result) == {
        "final_val_worst_group_acc": 0.5, "final_val_acc/small 0-4/red": 0.5, "test_worst_group_acc": 0.4,
        "test_acc/small 0-4/red": 0.4, "test_n/small 0-4/red": 40.0, "final_val_n/small 0-4/red": 9.0,
        "best_epoch": 1.0}


def test_a_resumed_run_continues_its_mlflow_run(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    first = tracking.RunTracker(uri, "exp", "run-a", {"dataset": "d", "api_token": "s3cr3t"})
    run_id = first.start({"lr": 0.1, "stage1": {"lr": 0.01}, "secret_key": "s3cr3t"})
    tracking.log_metrics(uri, run_id, {"val_worst_group_acc": 0.5}, step=0)
    again = tracking.RunTracker(uri, "exp", "run-a", {"dataset": "d"})  # the driver died; the rerun resumes
    assert again.start({"lr": 0.1}) == run_id
    run = tracking.client(uri).get_run(run_id)
    assert run.data.params["stage1.lr"] == "0.01" and run.data.params["secret_key"] == "<redacted>"
    assert "s3cr3t" not in str(run.data.tags)
    (tmp_path / "rd").mkdir()
    (tmp_path / "rd" / "metrics.jsonl").write_text("{}\n")
    artifacts = run_artifacts(str(tmp_path / "rd"))  # the run's files that exist; no plot from an empty record
    again.finish({"test": {"worst_group_acc": 0.4}}, {**artifacts, "plot.png": b"\x89PNG"})
    run = tracking.client(uri).get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["test_worst_group_acc"] == 0.4
    assert {a.path for a in tracking.client(uri).list_artifacts(run_id)} == {"metrics.jsonl", "plot.png"}
    assert (tmp_path / "mlartifacts").is_dir()  # beside the store, not in whatever directory the command ran
