"""Sweeps: search spaces from the method registry, and a real Ray Tune sweep tracked in a sqlite MLflow store."""

import pytest

from ffr.errors import FFRError
from ffr.methods import METHODS
from tune.spaces import method_space, to_domain
from tune.sweep import param_space, parse_sweep, trial_train_config


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_space_converts(name):
    space = method_space(name)
    assert set(space) == {h.name for h in METHODS.get(name).hparams}
    for domain in space.values():
        assert hasattr(domain, "sample")


@pytest.mark.parametrize("bad", [["gaussian", 0, 1], ["loguniform", 0, 1], ["uniform", 2, 1], ["choice", []], "x"])
def test_bad_search_spaces_are_one_line_errors(bad):
    with pytest.raises(FFRError, match="search space for 'lr'"):
        to_domain(bad, "lr")


def test_sweep_config_errors():
    with pytest.raises(FFRError, match="unknown stage-2 method 'dro'"):
        parse_sweep({"methods": ["dro"]})
    with pytest.raises(FFRError, match="unknown config key 'bogus'"):
        parse_sweep({"bogus": 1})


def test_trial_config_merges_method_hparams():
    cfg = parse_sweep({"methods": ["erm", "groupdro"], "search": {"lr": ["loguniform", 1e-4, 1e-2]}})
    space = param_space(cfg)
    assert "groupdro" in space["method_hparams"] and "erm" not in space["method_hparams"]
    params = {"method": "groupdro", "seed": 1, "train": {"lr": 0.005},
              "method_hparams": {"groupdro": {"step_size": 0.05, "adjustment": 1.0}}}
    train = trial_train_config({"dataset": "colored-digits", "method_hparams": {"adjustment": 0.0}}, params, "abc")
    assert train["method"] == "groupdro" and train["seed"] == 1 and train["lr"] == 0.005
    assert train["method_hparams"] == {"step_size": 0.05, "adjustment": 1.0} and train["run_name"] == "trial-abc"


@pytest.mark.slow
def test_sweep_runs_trials_and_tracks_them_in_mlflow(ray_cluster, tmp_path):
    import mlflow

    from tune.sweep import METRIC, run_sweep

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    table = run_sweep({
        "name": "t", "storage_path": str(tmp_path / "sweeps"),
        "train": {"dataset": "colored-digits", "dataset_options": {"bias_ratio": 0.9}, "backbone": "small-cnn",
                  "pretrained": None, "image_size": 16, "epochs": 2, "batch_size": 256, "cache_in_memory": True,
                  "controller_failure_limit": 1},
        "methods": ["erm", "groupdro"], "seeds": [0], "search": {"lr": ["loguniform", 1e-3, 3e-3]},
        "max_concurrent_trials": 2, "scheduler": {"type": "fifo"},
        "mlflow": {"tracking_uri": uri, "experiment_name": "sweep-test", "tags": {"api_token": "s3cr3t-value"}},
    })
    assert sorted(table["method"]) == ["erm", "groupdro"]
    assert table["error"].isna().all(), table["error"].tolist()
    assert table[METRIC].between(0, 1).all() and (table["epochs_run"] == 2).all()
    assert (tmp_path / "sweeps" / "t" / "sweep_results.csv").exists()

    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("sweep-test")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2
    for run in runs:
        assert run.data.params["method"] in {"erm", "groupdro"}
        assert METRIC in run.data.metrics
        history = client.get_metric_history(run.info.run_id, METRIC)
        assert len(history) == 2  # one point per epoch, forwarded by TuneReportCallback
        everything = str(run.data.params) + str(run.data.tags)
        assert "s3cr3t-value" not in everything
