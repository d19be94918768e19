"""Thin Ray glue: one stage = one ``TorchTrainer`` run (Ray Train V2), final evaluation = one Ray task.

The run lives at ``RunConfig(storage_path, name)``; rerunning with the same name resumes from its latest
checkpoint, and ``FailureConfig(max_failures)`` restarts dead workers from it. Checkpoints are ranked by
validation worst-group accuracy, so the best one and the latest one are always kept.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import warnings

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch.distributed as dist

from ffr.cluster.resources import custom_resources
from ffr.config import build, to_dict
from ffr.errors import FFRError
from ffr.runs import SCORE, checkpoint_name
from ffr.storage import is_remote, pyarrow_filesystem
from ffr.training import evaluation, loop
from ffr.training.config import StageSpec, TrainConfig, parse
from ffr.training.plan import read_plan
from ffr.training.stage import Session, run_stage


class RayTrainSession(Session):
    """The Session of one Ray Train worker: DDP over gloo/nccl, checkpoints through ``ray.train.report``."""

    def __init__(self) -> None:
        context = ray.train.get_context()
        self.rank, self.world_size = context.get_world_rank(), context.get_world_size()
        super().__init__(ray.train.torch.get_device())

    def prepare_model(self, model):
        return ray.train.torch.prepare_model(model)

    def all_reduce(self, tensor):
        if self.world_size > 1:
            dist.all_reduce(tensor)
        return tensor

    def gather(self, obj):
        if self.world_size == 1:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def sync_buffers(self, model):
        if self.world_size > 1:
            for buffer in loop.unwrap(model).buffers():
                dist.broadcast(buffer, src=0)

    def restore(self):
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as directory:
            return loop.load_state(directory)

    def log(self, line):
        # Ray Train patches print() to go to its logger *and* the wrapped stdout (two lines); the process's
        # real stdout still reaches the driver, once.
        print(line, file=sys.__stdout__, flush=True)

    def report(self, metrics, state, epoch):
        if state is None:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as directory:
            loop.save_state(state, directory)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory),
                             checkpoint_dir_name=checkpoint_name(epoch))


def log_level() -> str:
    """Ray Train's log level for our runs: WARNING, or $FFR_TRAIN_LOG_LEVEL (INFO brings every report back)."""
    return os.environ.get("FFR_TRAIN_LOG_LEVEL", "WARNING").upper()


def _quiet_report_lines(level: str) -> None:
    """Ray 2.60 logs every ``ray.train.report`` at INFO ("Reporting training result N: TrainingReport(...)",
    the full metrics dict) through ``logging.getLogger(__file__)`` in ray/train/v2/_internal/execution/
    context.py. That logger is named by a file path, not ``ray.train.*``, so ``LoggingConfig(log_level)``
    (whose filter only looks at ``ray.train`` names) never reaches it and the root logger's console handler
    forwards each line to the driver. Our own epoch line already says what matters."""
    from ray.train.v2._internal.execution import context

    logging.getLogger(context.__file__).setLevel(level)


def train_loop_per_worker(loop_config: dict) -> None:
    _quiet_report_lines(loop_config.get("log_level", "WARNING"))
    cfg, spec = parse(loop_config["config"]), build(StageSpec, loop_config["stage"])
    run_stage(cfg, spec, RayTrainSession(), run_directory=loop_config["run_dir"], data=read_plan(loop_config["plan"]))


def _storage(storage_path: str) -> tuple[str, object | None]:
    """``RunConfig(storage_path, storage_filesystem)`` for Ray Train: a bare path, plus for S3 a pyarrow wrapper of
    the filesystem ``ffr.storage`` configured (endpoint, credentials), so Ray Train writes where ffr reads."""
    if not is_remote(storage_path):
        return pyarrow_filesystem(storage_path)[1], None
    fs, inner = pyarrow_filesystem(storage_path)
    return inner, fs


def checkpoint_uri(storage_path: str, checkpoint: ray.train.Checkpoint) -> str:
    """A checkpoint's path as a URI the rest of ffr (and users) can open."""
    if is_remote(storage_path):
        return f"{storage_path.split('://', 1)[0]}://{checkpoint.path.lstrip('/')}"
    return checkpoint.path


def fit_stage(cfg: TrainConfig, spec: StageSpec, storage_path: str, run_directory: str,
              callbacks: list | None = None, *, plan: str) -> tuple[str, dict, str]:
    """Train one stage on Ray Train; returns (best checkpoint URI, its reported metrics, latest checkpoint URI)."""
    from ray.train.torch import TorchTrainer

    path, filesystem = _storage(storage_path)
    resources = {"CPU": cfg.cpus_per_worker, **({"GPU": 1} if cfg.use_gpu else {}),
                 **custom_resources("train", 1 if cfg.use_gpu else 0)}  # lands workers on the training node type
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": to_dict(cfg), "stage": to_dict(spec), "run_dir": run_directory,
                           "plan": plan, "log_level": log_level()},
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=spec.run_name, storage_path=path, storage_filesystem=filesystem,
            # Our one line per epoch says what matters; Ray Train's own INFO lines drown it (see also
            # _quiet_report_lines). FFR_TRAIN_LOG_LEVEL=INFO brings them back.
            logging_config=ray.train.LoggingConfig(log_level=log_level()),
            callbacks=list(callbacks or []),
            failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures,
                                                   controller_failure_limit=cfg.controller_failure_limit),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.keep_checkpoints,
                                                         checkpoint_score_attribute=SCORE,
                                                         checkpoint_score_order="max")))
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    ranked = [(c, m) for c, m in (result.best_checkpoints or []) if SCORE in m]
    if not ranked:
        raise FFRError(f"run {spec.run_name!r} finished without a checkpoint; is epochs > 0?")
    best, metrics = max(ranked, key=lambda cm: cm[1][SCORE])
    return checkpoint_uri(storage_path, best), metrics, checkpoint_uri(storage_path, result.checkpoint)


class MLflowEpochs(ray.train.UserCallback):
    """Logs each epoch's record (rank 0's report) to the run's MLflow run, live, from the Train controller;
    group metrics are keyed by group name. With ``run_directory``, the epoch's per-step terms (a method's
    ``step_log``, written there by rank 0 before it reports) are logged too, at their global step, under
    ``step/<term>``. A tracking hiccup warns once and never stops training."""

    def __init__(self, uri: str, run_id: str, group_names: list[str], train_group_names: list[str],
                 run_directory: str | None = None) -> None:
        self.uri, self.run_id, self._warned = uri, run_id, False
        self.group_names, self.train_group_names = list(group_names), list(train_group_names)
        self.run_directory = run_directory

    def after_report(self, run_context, metrics: list[dict], checkpoint) -> None:
        from ffr import runs, tracking

        if not metrics:
            return
        record = metrics[0]
        try:
            tracking.log_metrics(self.uri, self.run_id, tracking.epoch_metrics(record, self.group_names,
                                                                                     self.train_group_names),
                                 step=int(record.get("epoch", 0)))
            if self.run_directory is not None and "train_steps" in record:
                steps = runs.read_steps(self.run_directory, int(record["stage"]), int(record["epoch"]))
                tracking.log_step_metrics(self.uri, self.run_id, steps)
        except Exception as e:  # noqa: BLE001 - tracking must not kill a training run
            if not self._warned:
                warnings.warn(f"MLflow logging to {self.uri} failed: {e}", stacklevel=2)
                self._warned = True


@ray.remote
def _evaluate_task(config: dict, stage: dict, checkpoint_dir: str, plan: str) -> dict:
    cfg = parse(config)
    return evaluation.evaluate_checkpoint(cfg, build(StageSpec, stage), checkpoint_dir, loop.device(cfg.use_gpu),
                                          data=read_plan(plan))


@ray.remote
def _train_predictions_task(config: dict, stage: dict, checkpoint_dir: str, plan: str) -> np.ndarray:
    cfg = parse(config)
    return evaluation.train_predictions(cfg, build(StageSpec, stage), checkpoint_dir, loop.device(cfg.use_gpu),
                                        data=read_plan(plan))


def _remote(task, cfg: TrainConfig):
    # "DEFAULT" scheduling: inside a Tune trial, tasks would otherwise be captured by the trial's placement
    # group, which holds only the trial driver's CPU (Train's own workers are scheduled outside it too).
    return task.options(num_cpus=cfg.cpus_per_worker, num_gpus=1 if cfg.use_gpu else 0, scheduling_strategy="DEFAULT",
                        resources=custom_resources("train", 1 if cfg.use_gpu else 0))


def evaluate(cfg: TrainConfig, spec: StageSpec, checkpoint_dir: str, *, plan: str) -> dict:
    """Val/test metrics (and a method's post-fit step) of a checkpoint, computed where training workers run."""
    return ray.get(_remote(_evaluate_task, cfg).remote(to_dict(cfg), to_dict(spec), checkpoint_dir, plan))


def train_predictions(cfg: TrainConfig, spec: StageSpec, checkpoint_dir: str, *, plan: str) -> np.ndarray:
    return ray.get(_remote(_train_predictions_task, cfg).remote(to_dict(cfg), to_dict(spec), checkpoint_dir, plan))
