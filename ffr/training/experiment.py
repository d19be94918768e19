"""``run_experiment(config)``: every stage of one experiment, each a run directory of its own.

ffr: stage 1 (ERM on balanced synthetic data, shared by all methods) → stage 2 (the method on real data,
starting from stage 1's best checkpoint). none / usb / asb: stage 2 only. JTT first trains its
identification model (short ERM, same data and init) inside stage 2's run directory. A run whose
``ffr_result.json`` exists is done and is not trained again; one without it resumes from its checkpoints.
"""

from __future__ import annotations

import dataclasses

import numpy as np

import ffr.methods
from ffr import backbones, runs, tracking, variants
from ffr.datasets import DATASETS
from ffr.errors import FFRError, unwrap_user_errors
from ffr.runs.plots import run_artifacts
from ffr.storage import filesystem, join, require_bucket
from ffr.training import plan
from ffr.training.config import (
    StageSpec,
    TrainConfig,
    identification_stage,
    method_stage,
    parse,
    pretrain_stage,
    resolved,
)
from ffr.training.data import ExperimentData, load_experiment_data

IDENTIFICATION = "identification.json"


def _check_names(cfg: TrainConfig) -> None:
    DATASETS.get(cfg.dataset)
    variants.VARIANTS.get(cfg.variant)
    backbones.create_backbone(cfg.backbone, 2, pretrained=None, **cfg.backbone_options)  # name and options
    ffr.methods.create(cfg.method, **cfg.method_hparams)  # also validates the hyperparameters


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
    """The module that trains and evaluates a stage: Ray Train (default) or this process (``executor: local``)."""
    if cfg.executor == "local":
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
    group_names = data.val.spec.group_names()
    try:
        result = _train_and_evaluate(cfg, spec, data, storage_path, directory,
                                     [*(callbacks or []), ray_train.MLflowEpochs(tracker.uri, tracker.run_id,
                                                                                 group_names)])
    except BaseException:
        tracker.fail()
        raise
    try:
        tracker.finish(result, run_artifacts(directory))
    except Exception as e:  # noqa: BLE001 - the run itself is done and written; tracking is secondary
        _log(f"[{spec.run_name}] warning: could not finish the MLflow run ({e.__class__.__name__}: {e})")
    return result


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
              **{k: v for k, v in evaluated.items() if k != "epoch"}}
    runs.write_result(directory, result)
    _log(f"[{spec.run_name}] done: best epoch {best_epoch}, val WGA {best_wga:.3f}, "
         f"test WGA {result['test']['worst_group_acc']:.3f}")
    return result


def _identify_errors(cfg: TrainConfig, stage2: StageSpec, data: ExperimentData) -> list[bool]:
    """JTT's identification run: ERM for ``identification_epochs``; the error set of its final model."""
    executor = _executor(cfg)
    epochs = int(ffr.methods.create("jtt", **cfg.method_hparams).config["identification_epochs"])
    spec = identification_stage(cfg, stage2, epochs)
    parent = runs.run_dir(cfg.storage_path, stage2.run_name)
    directory = runs.run_dir(parent, spec.run_name)
    marker = join(directory, IDENTIFICATION)
    done = runs.read_json(marker)
    if done is not None:
        return [bool(v) for v in done["error_set"]]
    runs.write_config(directory, resolved(cfg, spec))
    stage_plan = plan.write_plan(parent, data, stage2.stage)  # the identification run trains on stage 2's data
    _best, _metrics, latest = executor.fit_stage(cfg, spec, parent, directory, plan=stage_plan)
    errors = np.asarray(executor.misclassified(cfg, spec, latest, plan=stage_plan), dtype=bool)
    runs.write_json(marker, {"checkpoint": latest, "n_errors": int(errors.sum()), "n_train": len(errors),
                             "error_set": errors.astype(int).tolist()})
    _log(f"[{stage2.run_name}] JTT identification: {int(errors.sum())} of {len(errors)} training examples wrong")
    return errors.tolist()


@unwrap_user_errors
def run_experiment(config: TrainConfig | dict, callbacks: list | None = None) -> dict:
    """Run every stage of one experiment; returns the final (stage-2) result, plus ``stage1`` for ffr.

    ``callbacks`` (Ray Train UserCallbacks, e.g. Tune's TuneReportCallback) see the stage-2 run only."""
    cfg = parse(config)
    _check_names(cfg)
    # Before Ray starts: the storage bucket (Ray Train's storage layer would create a missing one), the
    # init checkpoint, then the data (roots, files, bad-image policy).
    fs, inner = filesystem(cfg.storage_path)
    require_bucket(fs, inner)
    init = runs.resolve_checkpoint(cfg.init_checkpoint, cfg.seed) if cfg.init_checkpoint else None
    data = load_experiment_data(cfg)  # fails fast, before any Ray work, on bad data options
    if cfg.bad_images == "skip":
        cfg = dataclasses.replace(cfg, skipped_images=data.skipped_images)  # workers drop the same rows
        if data.skipped_images:
            _log(f"skipped {len(data.skipped_images)} unreadable image(s) (bad_images: skip), e.g. "
                 f"{data.skipped_images[0]!r}")
    if cfg.executor != "local":
        from ffr.ray_session import ensure_ray

        ensure_ray()
    stage1_result = None
    if variants.PRETRAIN_STAGE in data.stages:
        stage1_result = run_stage_job(cfg, pretrain_stage(cfg), data)
        init = stage1_result["checkpoint"]
    stage2 = method_stage(cfg, init)
    if cfg.method == "jtt" and stage2.epochs > 0:
        stage2.error_set = _identify_errors(cfg, stage2, data)
    result = run_stage_job(cfg, stage2, data, callbacks=callbacks)
    return {**result, "stage1": stage1_result}
