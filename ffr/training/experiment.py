"""``run_experiment(config)``: every stage of one experiment, each a run directory of its own.

The variant (ffr.variants) says which stages there are: a stage 1 (e.g. ERM on balanced synthetic data,
shared by all methods) whose best checkpoint stage 2 starts from, or stage 2 only. The method (ffr.methods)
says what else stage 2 needs: a preliminary run (e.g. JTT's identification: a short ERM run, same data and
init) trained inside stage 2's run directory, whose result feeds the main run. A run whose ``ffr_result.json``
exists is done and is not trained again; one without it resumes from its checkpoints.
"""

from __future__ import annotations

import dataclasses

import numpy as np

import ffr.methods
from ffr import backbones, runs, tracking, variants
from ffr.datasets import DATASETS
from ffr.errors import FFRError, unwrap_user_errors
from ffr.groups import SOURCE_NAMES
from ffr.runs.plots import run_artifacts
from ffr.storage import filesystem, join, require_bucket
from ffr.training import plan
from ffr.training.config import (
    StageSpec,
    TrainConfig,
    method_stage,
    parse,
    preliminary_stage,
    pretrain_stage,
    resolve_executor,
    resolve_paths,
    resolved,
)
from ffr.training.data import ExperimentData, load_experiment_data


def _check_names(cfg: TrainConfig) -> None:
    DATASETS.options(cfg.dataset, cfg.dataset_options, "dataset_options")  # name and options, before the weights
    variants.VARIANTS.get(cfg.variant)
    # name and options through the registry: building a ResNet-50 only to check its name cost seconds
    backbones.BACKBONES.options(cfg.backbone, cfg.backbone_options, "backbone_options")
    ffr.methods.create(cfg.method, **cfg.method_hparams)  # also validates the hyperparameters
    check_weights(cfg)


def check_weights(cfg: TrainConfig) -> None:
    """The pretrained weights a stage starts from are reachable (FFRError naming the file otherwise). With an
    init_checkpoint every trained stage starts from it, so ``pretrained`` is not read."""
    if cfg.init_checkpoint is None:
        backbones.check_pretrained(cfg.backbone, cfg.pretrained)


def _log(message: str) -> None:
    print(message, flush=True)


def _tracker(cfg: TrainConfig, spec: StageSpec) -> tracking.RunTracker | None:
    uri = tracking.tracking_uri(cfg.mlflow, cfg.storage_path)
    if uri is None:
        return None
    tags = {**cfg.mlflow.tags, "dataset": cfg.dataset, "variant": cfg.variant, "method": spec.method,
            "stage": spec.stage, "seed": cfg.seed, "role": spec.role}
    return tracking.RunTracker(uri, cfg.mlflow.experiment_name or cfg.dataset, spec.run_name, tags)


def _executor(cfg: TrainConfig):
    """The module that trains and evaluates a stage: Ray Train or this process (``executor: local``); ``auto`` is
    resolved by :func:`run_experiment` before any stage runs."""
    if resolve_executor(cfg)[0] == "local":
        from ffr.training import local

        return local
    from ffr.training import ray_train

    return ray_train


def run_stage_job(cfg: TrainConfig, spec: StageSpec, data: ExperimentData, storage_path: str | None = None,
                  callbacks: list | None = None) -> dict:
    """Train (or resume, or skip if finished) one stage, evaluate its best checkpoint, write the result file;
    tracked as one MLflow run (ffr.tracking) when a tracking URI resolves."""
    storage_path = storage_path or cfg.storage_path
    directory = runs.run_dir(storage_path, spec.run_name)
    finished = runs.read_result(directory)
    if finished is not None:
        _log(f"[{spec.run_name}] already finished ({runs.RESULT} exists); not training again")
        return finished
    runs.write_config(directory, resolved(cfg, spec))
    runs.write_splits(directory, data.splits_for(spec.stage))
    plan.write_plan(directory, data, spec.stage)  # what workers and evaluation read: no second listing
    tracker = _tracker(cfg, spec)
    if tracker is None:
        return _train_and_evaluate(cfg, spec, data, storage_path, directory, callbacks)
    from ffr.training import ray_train

    tracker.start(resolved(cfg, spec))
    epochs = ray_train.MLflowEpochs(tracker.uri, tracker.run_id, data.val.spec.group_names(),
                                    training_group_names(data, spec.stage), directory)
    try:
        result = _train_and_evaluate(cfg, spec, data, storage_path, directory, [*(callbacks or []), epochs])
    except BaseException:
        tracker.fail()
        raise
    try:
        tracker.finish(result, run_artifacts(directory))
    except Exception as e:  # noqa: BLE001 - the run itself is done and written; tracking is secondary
        _log(f"[{spec.run_name}] warning: could not finish the MLflow run ({e.__class__.__name__}: {e})")
    return result


def training_group_names(data: ExperimentData, stage: int) -> list[str]:
    """Names of a stage's training groups, the ones its draws are counted by: (class, bias, source) for USB/ASB;
    a stage that trains on one source only (FFR's stage 1: synthetic) says which."""
    stage_data = data.stages[stage]
    names = stage_data.train_spec.group_names()
    sources = set(stage_data.train.source.tolist())
    if stage_data.train_spec.with_source or len(sources) != 1:
        return names
    source = SOURCE_NAMES[sources.pop()]
    return [f"{name}/{source}" for name in names]


def _train_and_evaluate(cfg: TrainConfig, spec: StageSpec, data: ExperimentData, storage_path: str,
                        directory: str, callbacks: list | None) -> dict:
    executor = _executor(cfg)
    if spec.epochs == 0:
        if not spec.init_checkpoint:
            raise FFRError("epochs = 0 only evaluates an existing model; set init_checkpoint")
        best, best_epoch, best_wga = spec.init_checkpoint, None, None
    else:
        best, metrics, _latest = executor.fit_stage(cfg, spec, storage_path, directory, callbacks,
                                                    plan=plan.plan_path(directory))
        best_epoch, best_wga = int(metrics["epoch"]), metrics["val_worst_group_acc"]
    evaluated = executor.evaluate(cfg, spec, best, plan=plan.plan_path(directory))
    if best_wga is None:
        best_wga = evaluated.get("base_val", evaluated["val"])["worst_group_acc"]
    result = {"run_name": spec.run_name, "dataset": cfg.dataset, "variant": cfg.variant, "method": spec.method,
              "stage": spec.stage, "seed": cfg.seed, "best_epoch": best_epoch, "best_val_worst_group_acc": best_wga,
              "group_names": {str(g): n for g, n in enumerate(data.val.spec.group_names())},
              "checkpoint": best, "init_checkpoint": spec.init_checkpoint, "storage_path": storage_path,
              "bad_images": cfg.bad_images, "bad_images_skipped": len(cfg.skipped_images or []),
              # what made the synthetic images (read from their records): runs on another generator's output
              # are another setting in `ffr report`, not another seed
              **({"generator": data.generator} if data.generator else {}),
              **{k: v for k, v in evaluated.items() if k != "epoch"}}
    runs.write_result(directory, result)
    _log(f"[{spec.run_name}] done: best epoch {best_epoch}, val WGA {best_wga:.3f}, "
         f"test WGA {result['test']['worst_group_acc']:.3f}")
    return result


def _preliminary(cfg: TrainConfig, main: StageSpec, data: ExperimentData) -> dict | None:
    """The method's preliminary run, if it declares one, in its own sub-run directory of the main run; its
    marker file ``<name>.json`` (the checkpoint plus the method's result) makes a rerun reuse it."""
    method = ffr.methods.create(main.method, **main.method_hparams)
    run = method.preliminary_run()
    if run is None:
        return None
    executor = _executor(cfg)
    spec = preliminary_stage(main, run)
    parent = runs.run_dir(cfg.storage_path, main.run_name)
    directory = runs.run_dir(parent, spec.run_name)
    marker = join(directory, f"{run.name}.json")
    done = runs.read_json(marker)
    if done is not None:
        return {k: v for k, v in done.items() if k != "checkpoint"}
    runs.write_config(directory, resolved(cfg, spec))
    stage_plan = plan.write_plan(parent, data, main.stage)  # the preliminary run trains on the main run's data
    _best, _metrics, latest = executor.fit_stage(cfg, spec, parent, directory, plan=stage_plan)
    stage_data = data.stages[spec.stage]
    groups = stage_data.train.groups(stage_data.train_spec)
    method.setup(groups, stage_data.train_spec.n_groups)  # as in the main run: the method sees the same groups
    predictions = np.asarray(executor.train_predictions(cfg, spec, latest, plan=stage_plan))
    result = method.preliminary_result(predictions, stage_data.train.y, groups)
    runs.write_json(marker, {"checkpoint": latest, **result})
    _log(f"[{main.run_name}] {method.preliminary_summary(result)}")
    return result


def _prepare(config: TrainConfig | dict, log_executor: bool = True) -> tuple[TrainConfig, str | None, ExperimentData]:
    """The config parsed, its executor chosen, and everything checked before Ray starts: the storage bucket (Ray
    Train's storage layer would create a missing one), the init checkpoint, then the data (roots, files,
    bad-image policy). ``log_executor``: print the executor ``auto`` chose (a sweep prints it once)."""
    # Every path against the directory the command was started in, once, here on the driver: Ray Train
    # workers and Tune trials run elsewhere (a no-op for the absolute paths a sweep's trial receives).
    cfg = parse(resolve_paths(config))
    _check_names(cfg)
    chose = cfg.executor == "auto"
    executor, why = resolve_executor(cfg)
    cfg = dataclasses.replace(cfg, executor=executor)
    fs, inner = filesystem(cfg.storage_path)
    require_bucket(fs, inner)
    init = runs.resolve_checkpoint(cfg.init_checkpoint, cfg.seed) if cfg.init_checkpoint else None
    data = load_experiment_data(cfg)  # fails fast, before any Ray work, on bad data options
    if cfg.bad_images == "skip":
        cfg = dataclasses.replace(cfg, skipped_images=data.skipped_images)  # workers drop the same rows
        if data.skipped_images:
            _log(f"skipped {len(data.skipped_images)} unreadable image(s) (bad_images: skip), e.g. "
                 f"{data.skipped_images[0]!r}")
    if chose and log_executor:  # after the checks: a bad config says only its one line
        _log(f"executor: {executor} ({why})")
    if cfg.executor != "local":
        from ffr.ray_session import ensure_ray

        ensure_ray()
    return cfg, init, data


def _stage1(cfg: TrainConfig, data: ExperimentData) -> dict:
    from ffr.training import stage_lease

    stage1 = pretrain_stage(cfg)
    # Shared by every method, trial and job of this seed and stage-1 setting: one trains it, others wait.
    with stage_lease.hold(runs.run_dir(cfg.storage_path, stage1.run_name), stage1.run_name, _log):
        return run_stage_job(cfg, stage1, data)


@unwrap_user_errors
def run_experiment(config: TrainConfig | dict, callbacks: list | None = None, log_executor: bool = True) -> dict:
    """Run every stage of one experiment; returns the final (stage-2) result, plus ``stage1`` (None without).

    ``callbacks`` (Ray Train UserCallbacks, e.g. Tune's TuneReportCallback) see the stage-2 run only.
    ``log_executor``: print the executor ``auto`` chose (a sweep prints it once for all its trials)."""
    cfg, init, data = _prepare(config, log_executor)
    stage1_result = None
    if variants.PRETRAIN_STAGE in data.stages:
        stage1_result = _stage1(cfg, data)
        init = stage1_result["checkpoint"]
    stage2 = method_stage(cfg, init)
    if stage2.epochs > 0:
        stage2.preliminary = _preliminary(cfg, stage2, data)
    result = run_stage_job(cfg, stage2, data, callbacks=callbacks)
    return {**result, "stage1": stage1_result}


@unwrap_user_errors
def run_pretrain(config: TrainConfig | dict) -> dict:
    """Only the experiment's stage 1 (FFR's pretraining, shared by every stage-2 setting on top of it); its
    result. ``ffr study`` trains it as a trial of its own, before the stage-2 trials that start from it."""
    cfg = parse(resolve_paths(config))
    stages = sorted(variants.create(cfg.variant).stages)
    if variants.PRETRAIN_STAGE not in stages:
        raise FFRError(f"variant {cfg.variant!r} has no stage {variants.PRETRAIN_STAGE} to pretrain (its stages: "
                       f"{stages})")
    cfg, _init, data = _prepare(dataclasses.replace(cfg, init_checkpoint=None), log_executor=False)
    return _stage1(cfg, data)
