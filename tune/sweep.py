"""Ray Tune sweeps of stage-2 methods and hyperparameters, tracked in MLflow.

One Tune trial = one ``ffr.training.run_experiment`` (a Ray Train driver; the V2 Train-in-Tune pattern): the
trial's TorchTrainer forwards rank-0 epoch metrics to Tune with ``TuneReportCallback``, so ASHA can stop bad
trials early. The driver draws the *configurations* first (``tune.spaces.expand``, seeded by ``search_seed``):
``num_samples`` × methods × the grid entries of ``search``, each with one draw of the sweep's random ``search``
entries over training-config keys and of its method's declared hyperparameter space (``ffr.methods``:
``searchable`` options). Tune then grids configurations × seeds: **seeds are the inner loop**, every drawn
configuration runs with every seed (so each setting has n = len(seeds) in ``ffr report``), and a trial's config
holds only its own method's options.

Every trial is an ordinary ffr run: its run directory is ``{storage_path}/{name}/{run name}`` (next to Tune's
own trial folders), it is test-evaluated when its epochs are done, and ``ffr.tracking`` logs it to MLflow as
one run named after the ffr run, with only its own method's hyperparameters. A trial ASHA stopped early gets a
``stopped.json`` in its run directory (and its MLflow run is marked KILLED), so ``ffr report`` shows it as
stopped, not as a crash.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from ffr import runs, tracking
from ffr.config import build, load_config, set_dotted
from ffr.errors import FFRError, unwrap_user_errors, user_error
from ffr.methods import METHODS, search_spaces
from ffr.ray_session import ensure_ray, quiet_tune_console
from ffr.storage import absolute, filesystem, join, require_bucket
from ffr.tracking import MLflowConfig
from ffr.training.config import TrainConfig, parse, resolve_executor, resolve_paths
from tune.outputs import write_outcome
from tune.spaces import expand, method_space, to_domain

METRIC = "val_worst_group_acc"
TRIAL_PREFIX = "tune-"  # Tune trial folders are named tune-<trial id>


@dataclass
class SchedulerConfig:
    type: str = "asha"  # "asha" | "fifo"
    grace_period: int = 1
    reduction_factor: int = 2


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
    search_seed: int = 0  # seeds the draws of the random search entries (the same sweep draws the same configs)
    max_concurrent_trials: int = 1  # ≈ GPUs // (workers per trial): extra trials would only wait
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    # experiment_name defaults to the sweep's name; tracking_uri as in ffr.tracking, beside storage_path
    mlflow: MLflowConfig = field(default_factory=MLflowConfig)
    max_failures: int = 0  # trial-level retries (worker failures are retried inside Train)


def parse_sweep(config: SweepConfig | dict) -> SweepConfig:
    cfg = config if isinstance(config, SweepConfig) else build(SweepConfig, dict(config))
    for m in cfg.methods:
        METHODS.get(m)
    if not isinstance(cfg.search, dict):
        raise FFRError(f"config key 'search' = {cfg.search!r}; expected a mapping of training-config key → "
                       "[kind, ...]")
    for key, space in cfg.search.items():  # the kinds, before Ray starts (Tune would find them after)
        to_domain(space, key)
    if not cfg.methods or not cfg.seeds:
        raise FFRError("a sweep needs at least one method and one seed")
    if cfg.scheduler.type not in ("asha", "fifo"):
        raise FFRError(f"scheduler type {cfg.scheduler.type!r} is unknown; expected asha or fifo")
    if cfg.num_samples < 1 or cfg.max_concurrent_trials < 1:
        raise FFRError("num_samples and max_concurrent_trials must be >= 1")
    return cfg


def check_scheduler(cfg: SweepConfig, epochs: int) -> None:
    """ASHA's own asserts would fire after Ray started, as a traceback; say it in one line before."""
    if cfg.scheduler.type != "asha":
        return
    grace, factor = cfg.scheduler.grace_period, cfg.scheduler.reduction_factor
    if epochs < 1:
        raise FFRError(f"train.epochs = {epochs}; an ASHA sweep needs epochs >= 1")
    if grace < 1:
        raise FFRError(f"scheduler.grace_period = {grace}; expected an integer >= 1")
    if grace > epochs:
        raise FFRError(f"scheduler.grace_period = {grace} is more than train.epochs = {epochs}; expected "
                       f"grace_period <= epochs (ASHA's first rung must come before the last epoch)")
    if factor < 2:
        raise FFRError(f"scheduler.reduction_factor = {factor}; expected an integer >= 2")


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


def configurations(cfg: SweepConfig) -> list[dict[str, Any]]:
    """The configurations the sweep runs, each with every seed: {"method", "train": {key: value},
    "method_hparams": {option: value}} (only the trial's own method's options)."""
    rng = np.random.default_rng(cfg.search_seed)
    out = []
    for _ in range(cfg.num_samples):
        for method in cfg.methods:
            spaces = search_spaces(METHODS.get(method)) if cfg.search_method_hparams else {}
            for train in expand(cfg.search, rng):
                for hparams in expand(spaces, rng, f"{method}."):
                    out.append({"method": method, "train": train, "method_hparams": hparams})
    return out


def param_space(cfg: SweepConfig) -> dict[str, Any]:
    """Configurations × seeds, a grid (:func:`configurations`): the seed is the inner loop."""
    return {"configuration": tune.grid_search(configurations(cfg)), "seed": tune.grid_search(list(cfg.seeds))}


def trial_run_name(train: dict[str, Any], trial_id: str) -> str:
    """The ffr run (and MLflow run) name of one trial: readable, unique within the sweep, stable on restore."""
    # read from the dict, not parse(): the name is also needed for a trial whose sampled config is invalid
    dataset, variant = train.get("dataset") or TrainConfig.dataset, train.get("variant") or TrainConfig.variant
    return f"{dataset}-{variant}-{train['method']}-s{train['seed']}-{trial_id}"


def trial_train_config(base: dict[str, Any], params: dict[str, Any], trial_id: str) -> dict[str, Any]:
    """The training config one trial runs: base + its configuration's keys and method hyperparameters + seed."""
    configuration = params["configuration"]
    train = copy.deepcopy(base)
    for key, value in configuration.get("train", {}).items():
        set_dotted(train, key, value)
    train["method"], train["seed"] = configuration["method"], int(params["seed"])
    hparams = dict(train.get("method_hparams") or {})
    hparams.update(configuration.get("method_hparams", {}))
    train["method_hparams"] = hparams
    train["run_name"] = trial_run_name(train, trial_id)
    return train


def trial_configs(cfg: SweepConfig) -> tuple[list[dict[str, Any]], list[str]]:
    """The training config of every trial the sweep would run, for cost previews (``ffr sweep --dry-run``): methods ×
    seeds × the grid values × num_samples. Keys searched at random stay at the base config's values; the notes say
    which."""
    import itertools

    base = base_train_config(cfg)
    grid = {k: v[1] for k, v in cfg.search.items() if v[0] == "grid"}
    sampled = [k for k, v in cfg.search.items() if v[0] != "grid"]
    notes = []
    if sampled or (cfg.search_method_hparams and any(method_space(m) for m in cfg.methods)):
        notes.append(f"keys searched at random ({', '.join(sampled) or 'method hyperparameters'}) are counted at the "
                     "base config's values")
    if cfg.scheduler.type == "asha":
        notes.append("ASHA stops weak trials early: every trial is counted with all its epochs (an upper bound)")
    out = []
    for method, seed, values, _sample in itertools.product(cfg.methods, cfg.seeds, itertools.product(*grid.values()),
                                                          range(cfg.num_samples)):
        params = {"method": method, "seed": seed, "train": dict(zip(grid, values))}
        out.append(trial_train_config(base, params, f"dry-run-{len(out):05d}"))
    return out, notes


class FinishingASHA(ASHAScheduler):
    """ASHA that never stops a trial once its last epoch is reported. Plain ASHA stops every trial at
    ``max_t``, i.e. right after the last epoch, which kills the trial before its test evaluation; a trial
    that has trained all its epochs has cost everything already, so it is let finish. It still counts in
    the rungs, and trials below a rung's cutoff are stopped early as usual."""

    def __init__(self, epochs: int, **kwargs) -> None:
        super().__init__(max_t=epochs, **kwargs)
        self._epochs = epochs

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP and result.get(self._time_attr, 0) >= self._epochs:
            self._num_stopped -= 1
            return TrialScheduler.CONTINUE
        return action


class EpochReports(TuneReportCallback):
    """Tune's ``TuneReportCallback`` for every epoch but the last: the trial's own final report carries the
    last epoch's record together with the test numbers, so Tune counts one iteration per epoch (its
    ``training_iteration`` is the epoch number, as on the console, in the results and in MLflow). Runs in Ray
    Train's controller, or in the trial itself under ``executor: local`` (ffr.training.local asks ``forwards``)."""

    def __init__(self, last_epoch: int) -> None:
        super().__init__()
        self.last_epoch = last_epoch

    def forwards(self, record: dict) -> bool:
        return int(record.get("epoch", 0)) < self.last_epoch

    def after_report(self, run_context, metrics: list[dict], checkpoint) -> None:
        if metrics and not self.forwards(metrics[0]):
            return
        super().after_report(run_context, metrics, checkpoint)


def _trainable(params: dict[str, Any], base: dict[str, Any], launch_dir: str) -> None:
    from ffr.training import run_experiment
    from ffr.training.config import resolve_paths

    # A sampled path (search over synthetic_root, ...) is relative to where `ffr sweep` was started, not to
    # this trial's working directory (Tune's trial folder).
    train = resolve_paths(trial_train_config(base, params, tune.get_context().get_trial_id()), launch_dir)
    epochs = int(parse(train).epochs)
    result = run_experiment(train, callbacks=[EpochReports(epochs)], log_executor=False)
    # The last epoch's record with the test numbers, once (FinishingASHA lets it through). A restored sweep
    # re-entering a finished trial reports only this.
    directory = runs.run_dir(result["storage_path"], result["run_name"])
    last = next((r for r in reversed(runs.read_metrics(directory)) if r.get("stage") == result["stage"]), {})
    record = {k: v for k, v in last.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    tune.report({**record, "last_val_worst_group_acc": record.get(METRIC), METRIC: result["best_val_worst_group_acc"],
                 "best_epoch": result.get("best_epoch") or 0, "test_worst_group_acc": result["test"]["worst_group_acc"],
                 "finished": True})


class TrialLines(tune.Callback):
    """One console line per trial when it starts, finishes, is stopped early or fails (Tune's own progress
    output is off): what a person watching a sweep needs, with the trial's ffr run name."""

    def __init__(self, base: dict[str, Any], epochs: int, scheduler: str) -> None:
        self.base, self.epochs, self.scheduler = base, epochs, scheduler

    def _line(self, trial, what: str) -> None:
        print(f"[sweep] {_trial_name(trial, self.base)}: {what}", flush=True)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._line(trial, "started")

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        result = trial.last_result or {}
        if result.get("finished"):
            self._line(trial, f"finished {self.epochs} epochs, best epoch {result.get('best_epoch')}, val WGA "
                              f"{result.get(METRIC, float('nan')):.3f}, test WGA "
                              f"{result.get('test_worst_group_acc', float('nan')):.3f}")
        else:
            self._line(trial, f"stopped early by {self.scheduler.upper()} after epoch "
                              f"{result.get('training_iteration', 0)} of {self.epochs}")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._line(trial, "failed (its error is in the summary below)")


def tracking_uri_for(cfg: SweepConfig) -> str | None:
    """Where the sweep's trials are tracked (ffr.tracking.tracking_uri, beside the sweep's storage_path)."""
    return tracking.tracking_uri(cfg.mlflow, cfg.storage_path)


def _trial_name(trial, base: dict[str, Any]) -> str:
    """Tune's name for a trial (its status tables, its errors) = the trial's ffr run name."""
    try:
        return trial_train_config(base, trial.config, trial.trial_id)["run_name"]
    except Exception:  # noqa: BLE001 - a name is cosmetic; Tune's default never fails
        return f"trial_{trial.trial_id}"


def _trial_id(result) -> str | None:
    name = str(result.path or "").rstrip("/").rsplit("/", 1)[-1]
    return name[len(TRIAL_PREFIX):] if name.startswith(TRIAL_PREFIX) else None


def _trial_row(result, base: dict[str, Any], epochs: int, uri: str | None, experiment: str) -> dict[str, Any]:
    """One trial's row; marks a trial ASHA stopped early (run directory and MLflow run)."""
    params = result.config or {}
    configuration = params.get("configuration") or {}
    metrics = result.metrics or {}
    method = configuration.get("method")
    trial_id = _trial_id(result)
    run_name = trial_run_name(trial_train_config(base, params, trial_id), trial_id) if trial_id and method else None
    directory = runs.run_dir(base["storage_path"], run_name) if run_name else None
    record = runs.read_run(directory) if directory else None
    finished = record is not None and record.finished
    epochs_run = len({r.get("epoch") for r in record.metrics if r.get("stage") == 2}) if record else 0
    lost = None
    if result.error is None and not finished and metrics.get("finished"):
        # The trial trained and tested its run, but the run is not where the sweep keeps it: written elsewhere
        # (e.g. a path resolved in the trial's own working directory). Never report that as stopped.
        lost = (f"trial finished, but its run directory {directory!r} holds no {runs.RESULT}; its run was "
                "written somewhere else")
    if result.error is not None or lost:
        status = "error"
    elif finished:
        status = "finished"
    else:
        status = "stopped"
        runs.write_stopped(directory, {"stopped_by": "asha", "epochs_run": epochs_run, "epochs": epochs})
        for run in tracking.runs_named(uri, experiment, run_name) if uri else []:
            if run.info.status != "FINISHED":
                tracking.client(uri).set_tag(run.info.run_id, "ffr.status", "stopped")
                tracking.client(uri).set_terminated(run.info.run_id, "KILLED")
    result_file = record.result if finished else {}
    return {"run_name": run_name, "status": status, "run_dir": directory, "method": method, "seed": params.get("seed"),
            **{f"train.{k}": v for k, v in configuration.get("train", {}).items()},
            **{f"hp.{k}": v for k, v in configuration.get("method_hparams", {}).items()},
            METRIC: (result_file or {}).get("best_val_worst_group_acc", metrics.get(METRIC)),
            "test_worst_group_acc": ((result_file or {}).get("test") or {}).get("worst_group_acc"),
            "epochs_run": epochs_run,
            "error": lost if result.error is None else _error_line(result.error),
            "user_error": result.error is not None and user_error(result.error) is not None}


def _error_line(error: BaseException) -> str:
    """A failed trial's one line: its FFRError's message when it failed on a user error, else the error's
    last line (the traceback is in Tune's own output and the trial's error file)."""
    found = user_error(error)
    return str(found) if found is not None else str(error).strip().splitlines()[-1][:200]


def _check_inputs(train: TrainConfig, seeds: list[int]) -> None:
    """What every trial would otherwise find wrong only after Ray and Tune started: the init checkpoint
    (for each seed: best:<sweep> picks per seed) and the dataset (roots, files, bad-image policy)."""
    from ffr.training.data import load_experiment_data

    if train.init_checkpoint:
        for seed in seeds:
            runs.resolve_checkpoint(train.init_checkpoint, int(seed))
    load_experiment_data(train)


@unwrap_user_errors
def run_sweep(config: SweepConfig | dict) -> pd.DataFrame:
    """Run the sweep; returns one row per trial (run_name, status finished|stopped|error, run_dir, config,
    val and test WGA), also written as ``{storage_path}/{name}/sweep_results.csv``. The run directories are
    ``{storage_path}/{name}/{run_name}`` (``train.storage_path`` overrides the parent); ``ffr report`` reads
    that folder."""
    from ray.tune.schedulers import FIFOScheduler

    from ffr.training.experiment import check_weights

    cfg = parse_sweep(config)
    # Every path against the directory the sweep was started in, once, here: trials run in Tune's trial folders.
    launch_dir = os.getcwd()
    cfg = dataclasses.replace(cfg, storage_path=absolute(cfg.storage_path),
                              train_config=absolute(cfg.train_config))
    base = resolve_paths(base_train_config(cfg))
    check_weights(parse(base))  # unreachable pretrained weights stop the sweep before Ray starts
    epochs = int(parse(base).epochs)
    chosen = None
    if parse(base).executor == "auto" and not {"executor", "num_workers", "use_gpu"} & set(cfg.search):
        executor, why = resolve_executor(parse(base))
        base["executor"] = executor  # chosen once for every trial, and said once (after the checks)
        chosen = f"executor: {executor} for every trial ({why})"
    check_scheduler(cfg, epochs)
    fs, inner = filesystem(cfg.storage_path)
    require_bucket(fs, inner)  # before Ray: Tune's storage layer would create a missing bucket
    _check_inputs(parse(base), cfg.seeds)
    space = param_space(cfg)  # draws (and checks) every configuration before Ray starts
    if chosen:
        print(chosen, flush=True)
    uri = tracking_uri_for(cfg)
    experiment = cfg.mlflow.experiment_name or cfg.name
    base["mlflow"] = {"enabled": uri is not None, "tracking_uri": uri, "experiment_name": experiment,
                      "tags": {**cfg.mlflow.tags, "sweep": cfg.name}}
    if uri is not None:
        tracking.experiment_id(uri, experiment)  # create the store once, before trials race to do it
    ensure_ray()
    from ffr.cluster.tune_env import keep_credentials_out_of_trials

    keep_credentials_out_of_trials()  # Tune would copy AWS keys from this process into every trial's runtime env
    scheduler = (FinishingASHA(epochs, time_attr="training_iteration", grace_period=cfg.scheduler.grace_period,
                               reduction_factor=cfg.scheduler.reduction_factor)
                 if cfg.scheduler.type == "asha" else FIFOScheduler())
    from ffr.storage import pyarrow_filesystem

    pa_fs, tune_path = pyarrow_filesystem(cfg.storage_path)
    tuner = tune.Tuner(
        tune.with_parameters(_trainable, base=base, launch_dir=launch_dir),
        param_space=space,
        tune_config=tune.TuneConfig(metric=METRIC, mode="max", scheduler=scheduler, num_samples=cfg.num_samples,
                                    max_concurrent_trials=cfg.max_concurrent_trials,
                                    trial_name_creator=lambda trial: _trial_name(trial, base),
                                    trial_dirname_creator=lambda trial: f"{TRIAL_PREFIX}{trial.trial_id}"),
        # verbose=0: Tune's status tables (every 30 s), trial config boxes and TensorBoard hint made a 4-trial
        # sweep print ~220 lines; the trials' epoch lines and one line per trial event (TrialLines) remain.
        run_config=tune.RunConfig(name=cfg.name, storage_path=tune_path, storage_filesystem=pa_fs, verbose=0,
                                  callbacks=[TrialLines(base, epochs, cfg.scheduler.type)],
                                  failure_config=tune.FailureConfig(max_failures=cfg.max_failures)),
    )
    with quiet_tune_console():
        results = tuner.fit()
    table = pd.DataFrame([_trial_row(r, base, epochs, uri, experiment) for r in results])
    write_outcome(join(cfg.storage_path, cfg.name), table, "sweep_results.csv", cfg, "sweep_config.json")
    return table
