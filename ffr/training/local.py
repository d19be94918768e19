"""The in-process executor (``executor: local``): one stage trained in the calling process, no Ray Train.

Ray Train pays ~20 s per run to start its controller and worker group, which dwarfs a small run's ~10 s
of training (the demo grid is 45 such runs). With ``executor: local`` a stage runs through the same Ray-free
``run_stage`` in this process and keeps the same run-directory contract: ``checkpoint_epochNNNN/model.pt``
under the run directory, the best (by validation WGA) and the latest kept, rerunning resumes from the latest.
Inside a Ray Tune trial (the demo grid, sweeps) the trial process itself trains, and each epoch's metrics
go to Tune. One worker only: DDP needs Ray Train.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch

from ffr.errors import FFRError
from ffr.runs import SCORE, checkpoint_dir, read_metrics, saved_epochs
from ffr.storage import filesystem
from ffr.training import evaluation, loop
from ffr.training.config import StageSpec, TrainConfig
from ffr.training.plan import read_plan
from ffr.training.stage import Session, run_stage


class LocalSession(Session):
    """Checkpoints into the run directory itself; keeps the ``keep`` best by score plus the latest."""

    def __init__(self, run_directory: str, keep: int, device: torch.device, callbacks: list | None = None) -> None:
        super().__init__(device)
        self.run_directory, self.keep, self.callbacks = run_directory, max(1, keep), list(callbacks or [])
        self.scores: dict[int, float] = {}

    def restore(self) -> dict | None:
        epochs = saved_epochs(self.run_directory)
        scores = {int(r["epoch"]): float(r[SCORE]) for r in read_metrics(self.run_directory) if SCORE in r}
        self.scores = {e: scores[e] for e in epochs if e in scores}
        return loop.load_state(checkpoint_dir(self.run_directory, epochs[-1])) if epochs else None

    def report(self, metrics: dict, state: dict | None, epoch: int) -> None:
        if state is not None:
            loop.save_state(state, checkpoint_dir(self.run_directory, epoch))
            self.scores[epoch] = float(metrics[SCORE])
            self._prune(latest=epoch)
        for callback in self.callbacks:
            if _is_tune_report(callback):
                # TuneReportCallback hands records to the trial through a queue that the trial's own
                # thread must not feed; here the trial process *is* the trainer, so report directly — the
                # records it forwards (a sweep holds the last epoch's back for its final report).
                from ray import tune

                if getattr(callback, "forwards", lambda record: True)(metrics):
                    tune.report({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
            else:  # as Ray Train's controller would, with rank 0's record
                callback.after_report(None, [metrics], None)

    def _prune(self, latest: int) -> None:
        ranked = sorted(self.scores, key=lambda e: self.scores[e], reverse=True)[:self.keep]
        fs, _ = filesystem(self.run_directory)
        for epoch in [e for e in self.scores if e not in ranked and e != latest]:
            fs.rm(filesystem(checkpoint_dir(self.run_directory, epoch))[1], recursive=True)
            del self.scores[epoch]

    def best_and_latest(self) -> tuple[int, int]:
        if not self.scores:
            raise FFRError(f"run {self.run_directory!r} finished without a checkpoint; is epochs > 0?")
        return max(self.scores, key=lambda e: self.scores[e]), max(self.scores)


@contextlib.contextmanager
def _cpu_budget(cfg: TrainConfig) -> Iterator[None]:
    """torch's threads = the run's ``cpus_per_worker`` while it trains here, as Ray Train gives its worker
    (OMP_NUM_THREADS). Left at torch's default (every core), the small runs this executor is for were 2.5×
    slower on a busy 2-core machine (45 s vs 18 s for 2 epochs of colored digits), and two side-by-side Tune
    trials fought over the same cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _is_tune_report(callback) -> bool:
    from ray.tune.integration.ray_train import TuneReportCallback

    return isinstance(callback, TuneReportCallback)


def fit_stage(cfg: TrainConfig, spec: StageSpec, storage_path: str, run_directory: str,
              callbacks: list | None = None, *, plan: str) -> tuple[str, dict, str]:
    """Train one stage here; returns (best checkpoint, its metrics record, latest checkpoint) like Ray Train's.

    ``callbacks`` are Ray Train ``UserCallback``s (a Tune trial's ``TuneReportCallback``, ffr's MLflow epoch
    logger): their ``after_report`` gets each epoch's record here, in this process, as the controller would
    call it under Ray Train (no run context, no checkpoint)."""
    if cfg.num_workers != 1:
        raise FFRError(f"executor 'local' trains in one process; num_workers = {cfg.num_workers} needs ray-train")
    session = LocalSession(run_directory, cfg.keep_checkpoints, loop.device(cfg.use_gpu), callbacks)
    with _cpu_budget(cfg):
        run_stage(cfg, spec, session, run_directory=run_directory, data=read_plan(plan))
    best, latest = session.best_and_latest()
    records = {int(r["epoch"]): r for r in read_metrics(run_directory)}
    return checkpoint_dir(run_directory, best), records[best], checkpoint_dir(run_directory, latest)


def evaluate(cfg: TrainConfig, spec: StageSpec, checkpoint: str, *, plan: str) -> dict:
    with _cpu_budget(cfg):
        return evaluation.evaluate_checkpoint(cfg, spec, checkpoint, loop.device(cfg.use_gpu), data=read_plan(plan))


def train_predictions(cfg: TrainConfig, spec: StageSpec, checkpoint: str, *, plan: str) -> np.ndarray:
    with _cpu_budget(cfg):
        return evaluation.train_predictions(cfg, spec, checkpoint, loop.device(cfg.use_gpu), data=read_plan(plan))
