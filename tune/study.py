"""``ffr study``: a whole paper grid as one Ray Tune run — datasets × bias ratios × variants × methods × a
hyperparameter grid (or seeded draws) × seeds.

The driver plans every run first (:func:`plan_study`, no Ray): each configuration with every seed (seeds are
the inner loop), each run named by its content as ``ffr train`` names it. Runs that several configurations
share are planned once: FFR's stage 1 per (dataset, bias ratio, seed, stage-1 setting) — every stage-2
setting on top of it reuses it — and a run that two entries of ``datasets`` both imply (a ``none`` run does not
depend on the synthetic set). Runs already finished (``ffr_result.json``) are not planned again, so rerunning
the command after a kill resumes: unfinished runs resume from their checkpoints, finished ones are skipped.

Every remaining run is one trial of a single Tune run. Stage-1 runs are their own trials, and a searcher
(:class:`DependencyOrder`) hands Tune a stage-2 trial only once the stage-1 run it starts from has finished, so
no trial holds a slot while it waits (with ``tune.grid`` chains, a stage-2 run waited behind its stage 1 in one
trial, or on another trial's lease). A trial's config holds its own run's keys only (its method's options).
At the end the command prints ``ffr report``'s protocol table per entry of ``datasets``.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from ray import tune
from ray.tune.search import Searcher

from ffr import runs, tracking, variants
from ffr.config import build, load_config, set_dotted
from ffr.errors import FFRError, unwrap_user_errors, user_error
from ffr.methods import METHODS
from ffr.ray_session import ensure_ray, quiet_tune_console
from ffr.runs.protocol import SELECTIONS
from ffr.storage import absolute, filesystem, join, pyarrow_filesystem, require_bucket
from ffr.tracking import MLflowConfig
from ffr.training.config import TrainConfig, method_stage, parse, pretrain_stage, resolve_paths
from tune.outputs import write_outcome
from tune.spaces import expand

TUNE_FOLDER = "tune"  # the Tune run's own folder inside the study folder, beside the run directories


@dataclass
class StudyConfig:
    name: str = "study"
    storage_path: str = "runs/studies"  # local or s3://; runs go under {storage_path}/{name}/
    train: dict[str, Any] = field(default_factory=dict)  # the base training config (as configs/train-*.yaml)
    train_config: str | None = None  # or a training config file; `train` entries override it
    # Each entry: training keys over `train` (dataset, dataset_options, synthetic_root, ...) and an optional
    # `label` naming it in the tables. `{seed}` in a string value is replaced by the run's seed (e.g. a
    # synthetic set generated per seed).
    datasets: list[dict[str, Any]] = field(default_factory=lambda: [{}])
    bias_ratios: list[float | None] = field(default_factory=list)  # empty: the entry's own dataset_options
    variants: list[str] = field(default_factory=lambda: ["none", "usb", "asb", "ffr"])
    methods: list[str] = field(default_factory=lambda: ["erm"])
    grid: dict[str, list[Any]] = field(default_factory=dict)  # training key → values, every combination
    method_grid: dict[str, dict[str, list[Any]]] = field(default_factory=dict)  # method → option → values
    search: dict[str, Any] = field(default_factory=dict)  # training key → [kind, ...], drawn num_samples times
    num_samples: int = 1
    search_seed: int = 0  # seeds the draws of `search`: the same config plans the same runs (resume)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    split_follows_seed: bool = True  # dataset_options.seed = seed (a seed picks the split), else as configured
    max_concurrent_trials: int = 2
    cpus_per_trial: float = 1.0
    select: str = "val-wga"  # the protocol of the final table (ffr report --select)
    mlflow: MLflowConfig = field(default_factory=MLflowConfig)  # experiment_name defaults to the study's name


def parse_study(config: StudyConfig | dict) -> StudyConfig:
    cfg = config if isinstance(config, StudyConfig) else build(StudyConfig, dict(config))
    for name, values in (("datasets", cfg.datasets), ("variants", cfg.variants), ("methods", cfg.methods),
                         ("seeds", cfg.seeds)):
        if not isinstance(values, list) or not values:
            raise FFRError(f"study key {name!r} = {values!r}; expected a non-empty list")
    for method in cfg.methods:
        METHODS.get(method)
    for variant in cfg.variants:
        variants.VARIANTS.get(variant)
    for method in cfg.method_grid:
        if method not in cfg.methods:
            raise FFRError(f"method_grid names method {method!r}, which the study does not run; expected one of "
                           f"{', '.join(cfg.methods)}")
    for where, grid in (("grid", cfg.grid), *((f"method_grid.{m}", g) for m, g in cfg.method_grid.items())):
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise FFRError(f"{where}.{key} = {values!r}; expected a non-empty list of values")
    if cfg.select not in SELECTIONS:
        raise FFRError(f"select = {cfg.select!r}; expected one of {', '.join(SELECTIONS)}")
    if cfg.num_samples < 1 or cfg.max_concurrent_trials < 1:
        raise FFRError("num_samples and max_concurrent_trials must be >= 1")
    # Every path against the directory the study was started in, here on the driver: trials run in Tune's
    # trial folders (ffr.training.config.resolve_paths does the same for each run's training paths).
    return dataclasses.replace(cfg, storage_path=absolute(cfg.storage_path),
                               train_config=absolute(cfg.train_config) if cfg.train_config else cfg.train_config)


# --- the plan (no Ray) --------------------------------------------------------------------------------------


@dataclass
class Job:
    """One run to train: a stage-1 run (``stage == 1``) or an experiment's final run, after ``after``."""

    run_name: str
    stage: int
    train: dict[str, Any]  # the training config (for stage 1, any experiment that shares it)
    epochs: int
    after: str | None = None  # the stage-1 run this one starts from
    finished: bool = False
    entries: list[str] = field(default_factory=list)  # the `datasets` labels this run belongs to


@dataclass
class StudyPlan:
    name: str
    folder: str  # {storage_path}/{name}: every run directory
    jobs: dict[str, Job]  # by run name, stage-1 runs first
    configurations: int  # configurations × seeds = planned experiments
    seeds: int
    entries: list[str]

    @property
    def to_train(self) -> list[Job]:
        return [j for j in self.jobs.values() if not j.finished]


def _fill_seed(value: Any, seed: int) -> Any:
    if isinstance(value, str):
        return value.replace("{seed}", str(seed))
    if isinstance(value, dict):
        return {k: _fill_seed(v, seed) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill_seed(v, seed) for v in value]
    return value


def _grid(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def base_train_config(cfg: StudyConfig) -> dict[str, Any]:
    base = load_config(cfg.train_config) if cfg.train_config else {}
    base.update(copy.deepcopy(cfg.train))
    base["storage_path"] = join(cfg.storage_path, cfg.name)
    return base


def _entry_label(entry: dict[str, Any], base: dict[str, Any], index: int, labels: list[str]) -> str:
    label = str(entry.get("label") or entry.get("dataset") or base.get("dataset") or TrainConfig.dataset)
    return label if label not in labels else f"{label} ({index})"


def experiment_configs(cfg: StudyConfig) -> list[tuple[str, dict[str, Any]]]:
    """(entry label, training config) of every planned experiment, configurations outside, seeds inside."""
    base = base_train_config(cfg)
    rng = np.random.default_rng(cfg.search_seed)
    out: list[tuple[str, dict[str, Any]]] = []
    labels: list[str] = []
    for index, entry in enumerate(cfg.datasets):
        if not isinstance(entry, dict):
            raise FFRError(f"datasets[{index}] = {entry!r}; expected a mapping of training keys (and a label)")
        label = _entry_label(entry, base, index, labels)
        labels.append(label)
        over = {k: v for k, v in entry.items() if k != "label"}
        for bias in cfg.bias_ratios or [None]:
            for variant in cfg.variants:
                for method in cfg.methods:
                    for _ in range(cfg.num_samples):
                        drawn = expand(cfg.search, rng) if cfg.search else [{}]
                        for combination in itertools.product(drawn, _grid(cfg.grid),
                                                             _grid(cfg.method_grid.get(method, {}))):
                            for seed in cfg.seeds:  # the inner loop: every configuration with every seed
                                train = _experiment(base, over, bias, variant, method, combination, seed, cfg)
                                out.append((label, train))
    return out


def _experiment(base: dict, over: dict, bias: float | None, variant: str, method: str, combination: tuple,
                seed: int, cfg: StudyConfig) -> dict[str, Any]:
    drawn, grid, hparams = combination
    train = copy.deepcopy(base)
    for key, value in over.items():
        train[key] = copy.deepcopy(value)
    for key, value in {**drawn, **grid}.items():
        set_dotted(train, key, value)
    # the base's method_hparams belong to the base's method; another method starts from its own defaults
    own = (train.get("method_hparams") or {}) if train.get("method", method) == method else {}
    train["variant"], train["method"], train["seed"] = variant, method, int(seed)
    train["method_hparams"] = {**own, **hparams}
    options = dict(train.get("dataset_options") or {})
    if bias is not None:
        options["bias_ratio"] = bias
    if cfg.split_follows_seed:
        options["seed"] = int(seed)
    train["dataset_options"] = options
    if not variants.create(variant).needs_synthetic():
        train["synthetic_root"] = None  # a real-only run does not depend on the synthetic set: shared
    train = resolve_paths(_fill_seed(train, int(seed)))
    train.pop("run_name", None)
    return train


def plan_study(cfg: StudyConfig) -> StudyPlan:
    """Every run of the study, each once, and which are finished already (reads only result files)."""
    jobs: dict[str, Job] = {}
    experiments = experiment_configs(cfg)
    for label, train in experiments:
        config = parse(train)
        final = method_stage(config)
        after = None
        if variants.PRETRAIN_STAGE in variants.create(config.variant).stages and not config.init_checkpoint:
            stage1 = pretrain_stage(config)
            after = stage1.run_name
            job = jobs.setdefault(after, Job(after, 1, train, stage1.epochs))
            job.entries += [label] if label not in job.entries else []
        job = jobs.setdefault(final.run_name, Job(final.run_name, 2, train, final.epochs, after))
        job.entries += [label] if label not in job.entries else []
    folder = join(cfg.storage_path, cfg.name)
    for job in jobs.values():
        job.finished = runs.result_path(runs.run_dir(folder, job.run_name)) is not None
    ordered = dict(sorted(jobs.items(), key=lambda kv: (kv[1].stage != 1, kv[0])))
    labels = list(dict.fromkeys(label for label, _ in experiments))
    return StudyPlan(cfg.name, folder, ordered, len(experiments) // len(cfg.seeds), len(cfg.seeds), labels)


def count_line(plan: StudyPlan) -> str:
    """What the study will run, printed before anything starts: runs (FFR stage-1 runs apart), epochs, and how
    many are finished already. The estimated cost (GPU-hours from the cost preview's throughput table per model
    × GPU type, the one ``--dry-run`` uses) is added to this line, from the same jobs and epochs."""
    stage1 = [j for j in plan.jobs.values() if j.stage == 1]
    todo = plan.to_train
    epochs = sum(j.epochs for j in todo)
    return (f"study {plan.name!r}: {len(plan.jobs)} runs ({len(stage1)} FFR stage-1 runs shared by the stage-2 "
            f"runs on top of them) = {plan.configurations} configurations × {plan.seeds} seeds; "
            f"{len(plan.jobs) - len(todo)} finished already, {len(todo)} to train ({epochs} epochs)")


# --- the Tune run -------------------------------------------------------------------------------------------


class DependencyOrder(Searcher):
    """Hands Tune the study's runs in order: a stage-2 run only once its stage-1 run has finished. A run
    whose stage 1 failed is not started (it would fail too); :meth:`suggest` returns FINISHED when nothing
    is left."""

    def __init__(self, jobs: list[Job]) -> None:
        super().__init__()
        self.pending = [j for j in jobs if not j.finished]
        self.done = {j.run_name for j in jobs if j.finished}
        self.failed: set[str] = set()
        self.skipped: list[str] = []
        self.running: dict[str, str] = {}

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True

    def get_state(self) -> dict:
        return {"pending": [j.run_name for j in self.pending], "done": sorted(self.done),
                "failed": sorted(self.failed), "skipped": list(self.skipped)}

    def save(self, checkpoint_path: str) -> None:
        # Tune checkpoints its searcher; a rerun of the study plans again from the run directories instead.
        with open(checkpoint_path, "w") as f:
            json.dump(self.get_state(), f)

    def suggest(self, trial_id: str) -> dict | str | None:
        for job in list(self.pending):
            if job.after in self.failed:
                self.pending.remove(job)
                self.skipped.append(job.run_name)
                self.failed.add(job.run_name)
                continue
            if job.after is None or job.after in self.done:
                self.pending.remove(job)
                self.running[trial_id] = job.run_name
                return {"run": job.run_name, "stage": job.stage, "train": job.train}
        return Searcher.FINISHED if not self.pending else None

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        name = self.running.pop(trial_id, None)
        if name is not None:
            (self.failed if error or not (result or {}).get("finished") else self.done).add(name)


def _trainable(params: dict[str, Any]) -> None:
    from ffr.training import run_experiment, run_pretrain

    if params["stage"] == 1:
        result = run_pretrain(params["train"])
    else:
        result = run_experiment(params["train"])
    tune.report({"finished": True, "val_worst_group_acc": result["best_val_worst_group_acc"],
                 "test_worst_group_acc": result["test"]["worst_group_acc"]})


def _error_line(error: BaseException) -> str:
    found = user_error(error)
    return str(found) if found is not None else str(error).strip().splitlines()[-1][:200]


@unwrap_user_errors
def run_study(config: StudyConfig | dict, plan: StudyPlan | None = None) -> pd.DataFrame:
    """Train every unfinished run of the study as one Tune run; returns one row per planned run (run_name, stage,
    status finished|failed|skipped, entries, run_dir, error), also written as ``{folder}/study_runs.csv``."""
    cfg = parse_study(config)
    plan = plan or plan_study(cfg)
    fs, inner = filesystem(cfg.storage_path)
    require_bucket(fs, inner)
    uri = tracking.tracking_uri(cfg.mlflow, cfg.storage_path)
    experiment = cfg.mlflow.experiment_name or cfg.name
    mlflow = {"enabled": uri is not None, "tracking_uri": uri, "experiment_name": experiment,
              "tags": {**cfg.mlflow.tags, "study": cfg.name}}
    jobs = list(plan.jobs.values())
    for job in jobs:
        job.train = {**job.train, "mlflow": mlflow}
    searcher = DependencyOrder(jobs)
    errors: dict[str, str] = {}
    if plan.to_train:
        if uri is not None:
            tracking.experiment_id(uri, experiment)  # create the store once, before trials race to do it
        from ffr.training.data import load_experiment_data

        checked: set[str] = set()
        for job in plan.to_train:  # each entry's data, before Ray starts: a bad root is one line now
            if job.stage == 2 and not set(job.entries) <= checked:
                load_experiment_data(parse(job.train))
                checked.update(job.entries)
        ensure_ray()
        from ffr.cluster.tune_env import keep_credentials_out_of_trials

        keep_credentials_out_of_trials()
        pa_fs, tune_path = pyarrow_filesystem(plan.folder)
        tuner = tune.Tuner(
            tune.with_resources(_trainable, {"cpu": cfg.cpus_per_trial}),
            # reuse_actors: a trial process keeps torch and the datasets' imports warm for the next run
            tune_config=tune.TuneConfig(search_alg=searcher, num_samples=len(plan.to_train),
                                        max_concurrent_trials=cfg.max_concurrent_trials, reuse_actors=True,
                                        trial_name_creator=lambda trial: str(trial.config.get("run", trial.trial_id)),
                                        trial_dirname_creator=lambda trial: f"trial-{trial.trial_id}"),
            run_config=tune.RunConfig(name=TUNE_FOLDER, storage_path=tune_path, storage_filesystem=pa_fs, verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=0)),
        )
        with quiet_tune_console():
            results = tuner.fit()
        for result in results:
            if result.error is not None and (result.config or {}).get("run"):
                errors[result.config["run"]] = _error_line(result.error)
    rows = []
    for job in jobs:
        finished = runs.result_path(runs.run_dir(plan.folder, job.run_name)) is not None
        status = ("finished" if finished else "skipped" if job.run_name in searcher.skipped else "failed")
        rows.append({"run_name": job.run_name, "stage": job.stage, "status": status, "entries": ",".join(job.entries),
                     "run_dir": runs.run_dir(plan.folder, job.run_name),
                     "error": errors.get(job.run_name, "its stage-1 run failed" if status == "skipped" else None)})
    table = pd.DataFrame(rows)
    write_outcome(plan.folder, table, "study_runs.csv", cfg, "study_config.json")
    return table


def records_by_entry(plan: StudyPlan) -> dict[str, list[runs.RunRecord]]:
    """The study's runs, read back, per entry of ``datasets`` (a run two entries share is in both)."""
    out: dict[str, list[runs.RunRecord]] = {label: [] for label in plan.entries}
    for job in plan.jobs.values():
        record = runs.read_run(runs.run_dir(plan.folder, job.run_name))
        for label in job.entries:
            out[label].append(record)
    return out

