"""Ray Tune sweeps of stage-2 methods and hyperparameters, tracked in MLflow.

One Tune trial = one ``ffr.training.run_experiment`` (a Ray Train driver; the V2 Train-in-Tune pattern): the
trial's TorchTrainer forwards rank-0 epoch metrics to Tune with ``TuneReportCallback``, so ASHA can stop bad
trials early, and ``MLflowLoggerCallback`` (on the Tune RunConfig) records params and per-epoch metrics in
MLflow. The search space is the product of: methods × seeds (grid), the sweep's own ``search`` entries over
training-config keys, and each method's declared hyperparameter space (``ffr.methods`` HParam.space).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from ray import tune

from ffr.config import build, load_config, redact, set_dotted, to_dict
from ffr.errors import FFRError
from ffr.methods import METHODS
from ffr.ray_session import ensure_ray
from ffr.storage import filesystem, is_remote, join
from ffr.training import rundir
from ffr.training.config import TrainConfig, parse
from tune.spaces import method_space, to_domain

METRIC = "val_worst_group_acc"


@dataclass
class SchedulerConfig:
    type: str = "asha"  # "asha" | "fifo"
    grace_period: int = 1
    reduction_factor: int = 2


@dataclass
class MLflowConfig:
    tracking_uri: str | None = None  # sqlite:///path/mlflow.db locally; http://<head>:5000 on a cluster
    experiment_name: str | None = None  # default: the sweep name
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class SweepConfig:
    name: str = "sweep"
    storage_path: str = "runs/sweeps"  # local or s3://; trials' training runs go under {storage_path}/{name}/
    train: dict[str, Any] = field(default_factory=dict)  # the base training config (as in configs/train-*.yaml)
    train_config: str | None = None  # or a training config file; `train` entries override it
    methods: list[str] = field(default_factory=lambda: ["erm", "resample", "groupdro"])
    seeds: list[int] = field(default_factory=lambda: [0])
    search: dict[str, Any] = field(default_factory=dict)  # training-config key → [kind, ...]
    search_method_hparams: bool = True
    num_samples: int = 1
    max_concurrent_trials: int = 1  # ≈ GPUs // (workers per trial): extra trials would only wait
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    mlflow: MLflowConfig = field(default_factory=MLflowConfig)
    max_failures: int = 0  # trial-level retries (worker failures are retried inside Train)


def parse_sweep(config: SweepConfig | dict) -> SweepConfig:
    cfg = config if isinstance(config, SweepConfig) else build(SweepConfig, dict(config))
    for m in cfg.methods:
        METHODS.get(m)
    if not cfg.methods or not cfg.seeds:
        raise FFRError("a sweep needs at least one method and one seed")
    if cfg.scheduler.type not in ("asha", "fifo"):
        raise FFRError(f"scheduler type {cfg.scheduler.type!r} is unknown; expected asha or fifo")
    if cfg.num_samples < 1 or cfg.max_concurrent_trials < 1:
        raise FFRError("num_samples and max_concurrent_trials must be >= 1")
    return cfg


def base_train_config(cfg: SweepConfig) -> dict[str, Any]:
    base = load_config(cfg.train_config) if cfg.train_config else {}
    base.update(copy.deepcopy(cfg.train))
    base.setdefault("storage_path", join(cfg.storage_path, cfg.name))
    parse(base)  # fail before starting Tune on a bad base config
    for key in cfg.search:
        probe = copy.deepcopy(base)
        set_dotted(probe, key, None)
        unknown = set(probe) - {f.name for f in dataclasses.fields(TrainConfig)}
        if unknown:
            raise FFRError(f"sweep search key {key!r} is not a training config key")
    return base


def param_space(cfg: SweepConfig) -> dict[str, Any]:
    space: dict[str, Any] = {"method": tune.grid_search(list(cfg.methods)), "seed": tune.grid_search(list(cfg.seeds))}
    space["train"] = {key: to_domain(value, key) for key, value in cfg.search.items()}
    if cfg.search_method_hparams:
        space["method_hparams"] = {m: method_space(m) for m in cfg.methods if METHODS.get(m).hparams}
    return space


def trial_train_config(base: dict[str, Any], params: dict[str, Any], trial_id: str) -> dict[str, Any]:
    """The training config one trial runs: base + sampled keys + its method's sampled hyperparameters."""
    train = copy.deepcopy(base)
    for key, value in params.get("train", {}).items():
        set_dotted(train, key, value)
    train["method"], train["seed"] = params["method"], int(params["seed"])
    hparams = dict(train.get("method_hparams") or {})
    hparams.update(params.get("method_hparams", {}).get(params["method"], {}))
    train["method_hparams"] = hparams
    train["run_name"] = f"trial-{trial_id}"
    return train


def _trainable(params: dict[str, Any], base: dict[str, Any]) -> None:
    from ray.tune.integration.ray_train import TuneReportCallback

    from ffr.training import run_experiment

    train = trial_train_config(base, params, tune.get_context().get_trial_id())
    # A restored sweep may re-enter a trial whose run already finished: Train then reports no epochs, so
    # the final numbers are reported once here instead.
    finished_before = rundir.read_result(rundir.run_dir(train["storage_path"], train["run_name"])) is not None
    result = run_experiment(train, callbacks=[TuneReportCallback()])
    if finished_before:
        tune.report({METRIC: result["best_val_worst_group_acc"], "epoch": result.get("best_epoch") or 0})


def tracking_uri_for(cfg: SweepConfig) -> str | None:
    """The config's URI, else $MLFLOW_TRACKING_URI (the head's server on a cluster), else a sqlite file beside
    a local sweep (MLflow ≥ 3.13 rejects ./mlruns file stores); None for an S3 sweep with no server."""
    if cfg.mlflow.tracking_uri:
        return cfg.mlflow.tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if is_remote(cfg.storage_path):
        return None
    return f"sqlite:///{os.path.abspath(join(cfg.storage_path, 'mlflow.db'))}"


def run_sweep(config: SweepConfig | dict) -> pd.DataFrame:
    """Run the sweep; returns one row per trial (config + final metrics), also written as sweep_results.csv."""
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    cfg = parse_sweep(config)
    base = base_train_config(cfg)
    ensure_ray()
    from ffr.cluster.tune_env import keep_credentials_out_of_trials

    keep_credentials_out_of_trials()  # Tune would copy AWS keys from this process into every trial's runtime env
    epochs = int(parse(base).epochs)
    scheduler = (ASHAScheduler(time_attr="training_iteration", max_t=max(epochs, 1),
                               grace_period=cfg.scheduler.grace_period,
                               reduction_factor=cfg.scheduler.reduction_factor)
                 if cfg.scheduler.type == "asha" else FIFOScheduler())
    callbacks = []
    tracking_uri = tracking_uri_for(cfg)
    if tracking_uri:
        callbacks.append(MLflowLoggerCallback(tracking_uri=tracking_uri,
                                              experiment_name=cfg.mlflow.experiment_name or cfg.name,
                                              tags=redact(dict(cfg.mlflow.tags)), save_artifact=False))
    from ffr.storage import pyarrow_filesystem

    pa_fs, tune_path = pyarrow_filesystem(cfg.storage_path)
    tuner = tune.Tuner(
        tune.with_parameters(_trainable, base=base),
        param_space=param_space(cfg),
        tune_config=tune.TuneConfig(metric=METRIC, mode="max", scheduler=scheduler, num_samples=cfg.num_samples,
                                    max_concurrent_trials=cfg.max_concurrent_trials),
        run_config=tune.RunConfig(name=cfg.name, storage_path=tune_path, storage_filesystem=pa_fs,
                                  callbacks=callbacks,
                                  failure_config=tune.FailureConfig(max_failures=cfg.max_failures)),
    )
    results = tuner.fit()
    rows = []
    for r in results:
        params = r.config or {}
        row = {"method": params.get("method"), "seed": params.get("seed"),
               **{f"train.{k}": v for k, v in params.get("train", {}).items()},
               **{f"hp.{k}": v for k, v in params.get("method_hparams", {}).get(params.get("method"), {}).items()},
               METRIC: (r.metrics or {}).get(METRIC), "epochs_run": (r.metrics or {}).get("training_iteration"),
               "error": None if r.error is None else str(r.error).splitlines()[0][:200]}
        rows.append(row)
    table = pd.DataFrame(rows)
    fs, inner = filesystem(join(cfg.storage_path, cfg.name))
    fs.makedirs(inner, exist_ok=True)
    with fs.open(join(inner, "sweep_results.csv"), "w") as f:
        table.to_csv(f, index=False)
    with fs.open(join(inner, "sweep_config.json"), "w") as f:
        f.write(json.dumps(redact(to_dict(cfg)), indent=2, default=str))
    return table
