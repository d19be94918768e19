"""Sweeps: search spaces from the method registry, and a real Ray Tune sweep tracked in a sqlite MLflow store."""

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from ffr import runs
from ffr.cli import main
from ffr.errors import FFRError
from ffr.methods import METHODS, search_spaces
from tune.spaces import method_space, to_domain
from tune.sweep import METRIC, FinishingASHA, param_space, parse_sweep, trial_train_config

SHIPPED = "configs/sweep-colored-digits.yaml"


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_space_converts(name):
    space = method_space(name)
    assert set(space) == set(search_spaces(METHODS.get(name)))
    fields = set(METHODS.get(name).Options.model_fields)
    if name == "disentangle":  # its sizes, schedule and probes follow the backbone and D3S; its weights and lrs search
        assert set(space) == {"penalty_weight", "model_lr", "critic_lr"} and set(space) < fields
    else:
        assert set(space) == fields  # every option of the other built-ins is searchable
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
    configurations = param_space(cfg)["configuration"]["grid_search"]
    assert [c["method"] for c in configurations] == ["erm", "groupdro"]
    assert configurations[0]["method_hparams"] == {}  # a trial holds only its own method's options
    assert set(configurations[1]["method_hparams"]) == {"step_size", "adjustment"}
    params = {"seed": 1, "configuration": {"method": "groupdro", "train": {"lr": 0.005},
                                           "method_hparams": {"step_size": 0.05, "adjustment": 1.0}}}
    train = trial_train_config({"dataset": "colored-digits", "method_hparams": {"adjustment": 0.0}}, params, "abc")
    assert train["method"] == "groupdro" and train["seed"] == 1 and train["lr"] == 0.005
    assert train["method_hparams"] == {"step_size": 0.05, "adjustment": 1.0}
    assert train["run_name"] == "colored-digits-none-groupdro-s1-abc"


def test_seeds_are_the_inner_loop_of_a_sweep():
    """Every drawn configuration runs with every seed (a sweep used to draw a fresh lr per seed: n = 1 per cell);
    the same sweep draws the same configurations."""
    cfg = parse_sweep({"methods": ["groupdro"], "seeds": [0, 1, 2], "num_samples": 3,
                       "search": {"lr": ["loguniform", 1e-4, 1e-2], "weight_decay": ["grid", [0.0, 1e-4]]}})
    space = param_space(cfg)
    assert space["seed"] == {"grid_search": [0, 1, 2]}
    configurations = space["configuration"]["grid_search"]
    assert len(configurations) == 3 * 2  # samples × grid, each then × 3 seeds
    assert len({c["train"]["lr"] for c in configurations}) == 6
    assert sorted(c["train"]["weight_decay"] for c in configurations) == [0.0] * 3 + [1e-4] * 3
    assert all(1e-4 <= c["train"]["lr"] <= 1e-2 and 1e-3 <= c["method_hparams"]["step_size"] <= 0.1
               for c in configurations)
    assert param_space(cfg)["configuration"] == space["configuration"]  # seeded: reproducible, resumable


def test_config_checks_fail_in_one_line_before_ray_starts(tmp_path, capsys):
    """grace_period > epochs used to be ASHA's AssertionError traceback after Ray had started."""
    import ray

    assert main(["sweep", "--config", SHIPPED, f"storage_path={tmp_path}", "train.epochs=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "scheduler.grace_period = 2 is more than train.epochs = 1" in err
    if not ray.is_initialized():  # run alone, nothing started Ray; with other tests the session cluster is up
        assert not list(tmp_path.iterdir())


def test_finishing_asha_lets_a_trial_through_its_last_epoch_only():
    from ray.tune.schedulers import TrialScheduler

    scheduler = FinishingASHA(3, time_attr="training_iteration", metric=METRIC, mode="max", grace_period=1)

    class Trial:
        def __init__(self, trial_id):
            self.trial_id, self.config, self.evaluated_params = trial_id, {}, {}

    good, bad = Trial("good"), Trial("bad")
    for trial in (good, bad):
        scheduler.on_trial_add(None, trial)
    result = scheduler.on_trial_result
    assert result(None, good, {"training_iteration": 1, METRIC: 0.9}) == TrialScheduler.CONTINUE
    assert result(None, bad, {"training_iteration": 1, METRIC: 0.1}) == TrialScheduler.STOP  # early: stopped
    assert result(None, good, {"training_iteration": 3, METRIC: 0.9}) == TrialScheduler.CONTINUE  # last epoch
    assert result(None, good, {"training_iteration": 4, METRIC: 0.9}) == TrialScheduler.CONTINUE  # test report


def test_a_trial_asha_stopped_is_marked_stopped_not_failed(tmp_path, capsys):
    """What the sweep driver does with a trial its scheduler stopped after 1 of 3 epochs: stopped.json in the
    run directory, the MLflow run KILLED and tagged, ``ffr report`` says 'stopped'; an errored one is 'error'."""
    from ffr import tracking
    from tune.sweep import _trial_row

    base = {"dataset": "colored-digits", "storage_path": str(tmp_path / "sweep")}
    params = {"seed": 0, "configuration": {"method": "erm", "train": {"lr": 0.001}, "method_hparams": {}}}
    name = "colored-digits-none-erm-s0-abc_00001"
    run = tmp_path / "sweep" / name
    runs.write_config(str(run), {"dataset": "colored-digits", "variant": "none", "method": "erm", "stage": 2,
                                   "seed": 0})
    runs.append_metrics(str(run), {"stage": 2, "epoch": 0, "val_worst_group_acc": 0.25})
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = tracking.RunTracker(uri, "sweep", name, {"method": "erm"})
    tracker.start({"lr": 0.001})
    stopped = SimpleNamespace(config=params, metrics={METRIC: 0.25}, error=None, path=str(tmp_path / "tune-abc_00001"))
    row = _trial_row(stopped, base, 3, uri, "sweep")
    assert (row["run_name"], row["status"], row["epochs_run"], row["error"]) == (name, "stopped", 1, None)
    assert runs.read_json(f"{run}/{runs.STOPPED}") == {"stopped_by": "asha", "epochs_run": 1, "epochs": 3}
    (mlflow_run,) = tracking.runs_named(uri, "sweep", name)
    assert mlflow_run.info.status == "KILLED" and mlflow_run.data.tags["ffr.status"] == "stopped"
    assert main(["report", str(tmp_path / "sweep")]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(name))
    assert "stopped" in line.split()

    failed = SimpleNamespace(config={**params, "seed": 1}, metrics={}, error=RuntimeError("boom\nValueError: x"),
                             path=str(tmp_path / "tune-abc_00002"))
    assert _trial_row(failed, base, 3, uri, "sweep")["status"] == "error"


@pytest.mark.slow
def _tune_results(folder: Path, run_name: str) -> list[str]:
    """The lines of Tune's own result.json of the trial whose ffr run is ``run_name``."""
    trial_id = run_name.rsplit("-", 1)[-1]
    return (folder / f"tune-{trial_id}" / "result.json").read_text().strip().splitlines()


def test_shipped_asha_sweep_then_report_and_mlflow(ray_cluster, tmp_path, capsys, monkeypatch):
    """configs/sweep-colored-digits.yaml, shrunk: every trial that trains all its epochs is test-evaluated,
    ASHA-stopped ones are marked stopped, ``ffr report`` reads the sweep folder, and MLflow holds one run per
    trial, named after the ffr run, with only its own method's hyperparameters."""
    import shutil

    import mlflow

    # As a user runs it: from the project root (here a fresh copy of configs/), storage_path as written
    # (runs/sweeps, relative). Tune runs each trial in its own working directory (a trial folder), so a
    # relative path reaching a trial unresolved would put its run somewhere else, or nowhere.
    shutil.copytree(Path(SHIPPED).parent, tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    sweeps = tmp_path / "runs" / "sweeps"
    overrides = ["methods=[erm, groupdro]", "seeds=[0]", "train.epochs=2",
                 "train.image_size=16", "train.backbone_options={width: 8}", "train.batch_size=256",
                 "train.controller_failure_limit=1", "scheduler.grace_period=1",
                 "mlflow.tags={team: fairness, api_token: s3cr3t-value}"]
    assert main(["sweep", "--config", "configs/sweep-colored-digits.yaml", *overrides]) == 0
    printed = capsys.readouterr().out
    folder = sweeps / "colored-digits-stage2"
    uri = f"sqlite:///{sweeps}/mlflow.db"
    assert f"mlflow ui --backend-store-uri {uri}" in printed and f"ffr report {folder}" in printed
    lines = printed.splitlines()
    assert lines.count("executor: local for every trial (auto: one CPU worker, no GPU; executor=ray-train trains "
                       "on Ray Train)") == 1
    assert not any("Trial status" in line or "tensorboard" in line.lower() for line in lines)  # Tune's tables

    table = pd.read_csv(folder / "sweep_results.csv")
    assert len(table) == 2 and set(table["status"]) <= {"finished", "stopped"}, table.to_string()
    # Every trial's run is in the sweep's folder, nowhere else (not in a Tune trial's working directory)
    assert all(Path(d).parent == folder for d in table["run_dir"]), table["run_dir"].tolist()
    written = {p.parent for p in tmp_path.rglob(runs.METRICS) if "mlartifacts" not in p.parts}  # not MLflow's copy
    assert written == {folder / n for n in table["run_name"]}, written
    for row in table.itertuples():  # one line per trial event, and Tune counted one iteration per epoch
        assert sum(line.startswith(f"[sweep] {row.run_name}: ") for line in lines) == 2, printed
        iterations = [json.loads(x)["training_iteration"] for x in _tune_results(folder, row.run_name)]
        assert iterations == list(range(1, row.epochs_run + 1)), iterations
    finished, stopped = table[table["status"] == "finished"], table[table["status"] == "stopped"]
    assert len(finished) >= 1
    assert finished["test_worst_group_acc"].between(0, 1).all() and (finished["epochs_run"] == 2).all()
    assert (stopped["epochs_run"] < 2).all()
    rows = [SimpleNamespace(**r) for r in table.to_dict("records")]
    for row in rows:
        run = folder / row.run_name
        assert (run / runs.RESULT).exists() == (row.status == "finished")
        assert (run / runs.STOPPED).exists() == (row.status == "stopped")

    assert main(["report", str(folder)]) == 0  # Tune's own result.json files sit in the same tree
    report = capsys.readouterr().out
    for row in rows:
        line = next(x for x in report.splitlines() if x.startswith(row.run_name))
        assert row.status in line.split()
        if row.status == "finished":
            assert f"{100 * row.test_worst_group_acc:.1f}" in line.split()

    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("colored-digits-stage2")
    tracked = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(tracked) == set(table["run_name"])
    for row in rows:
        run = tracked[row.run_name]
        tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
        assert (tags["dataset"], tags["variant"], tags["method"], tags["stage"], tags["seed"]) == \
            ("colored-digits", "none", row.method, "2", str(row.seed))
        assert tags["team"] == "fairness" and "s3cr3t-value" not in str(tags) + str(params)
        assert float(params["lr"]) == pytest.approx(vars(row)["train.lr"])
        assert ("method_hparams.step_size" in params) == (row.method == "groupdro")
        history = client.get_metric_history(run.info.run_id, "val_acc/small 0-4/green")
        assert len(history) == row.epochs_run
        if row.status == "finished":
            assert run.info.status == "FINISHED"
            assert metrics["test_worst_group_acc"] == pytest.approx(row.test_worst_group_acc)
            assert "test_acc/large 5-9/red" in metrics and "test_n/large 5-9/red" in metrics
            artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
            assert {"config.json", "metrics.jsonl", runs.RESULT, "val_wga_curve.png"} <= artifacts
        else:
            assert run.info.status == "KILLED" and tags["ffr.status"] == "stopped"


@pytest.mark.slow
def test_sweep_exits_1_naming_the_trials_that_failed(ray_cluster, tmp_path, capsys):
    """A trial that errors (here: a sampled batch size the training config rejects) makes ``ffr sweep``
    exit 1 with one line naming it; the sweep itself still ends and writes its results."""
    overrides = [f"storage_path={tmp_path}", "methods=[erm]", "seeds=[0, 1]", "search={batch_size: [grid, [0]]}",
                 "search_method_hparams=false", "scheduler.type=fifo"]
    assert main(["sweep", "--config", SHIPPED, *overrides]) == 1
    err_lines = capsys.readouterr().err.strip().splitlines()
    summary = err_lines[-1]
    assert summary.startswith("ffr sweep: 2 of 2 trials failed: colored-digits-none-erm-s0-"), summary
    assert "colored-digits-none-erm-s1-" in summary and "batch_size = 0" in summary
    table = pd.read_csv(tmp_path / "colored-digits-stage2" / "sweep_results.csv")
    assert list(table["status"]) == ["error", "error"]


def test_a_finished_trial_whose_run_is_elsewhere_is_an_error_not_stopped(tmp_path):
    """Before paths were resolved on the driver, a trial with a relative storage_path trained into Tune's trial
    folder and the sweep called it "stopped early by ASHA" with no test number; now that is an error row."""
    from tune.sweep import _trial_row

    base = {"dataset": "colored-digits", "storage_path": str(tmp_path / "sweep")}
    result = SimpleNamespace(config={"method": "erm", "seed": 0, "train": {}}, error=None,
                             metrics={METRIC: 0.5, "finished": True}, path=str(tmp_path / "tune-abc_00001"))
    row = _trial_row(result, base, 2, None, "sweep")
    assert row["status"] == "error" and "holds no ffr_result.json" in row["error"], row
    assert not (tmp_path / "sweep").exists()  # no stopped.json written anywhere
