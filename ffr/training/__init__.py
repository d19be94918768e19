"""Two-stage FFR training, in this process or on Ray Train.

Core (no Ray): ``config`` (typed config), ``sampling`` (DDP-correct resampling), ``loop`` (one epoch,
prediction, features), ``stage`` (one run, epoch by epoch), ``evaluation`` (final metrics, the method's
post-fit step, a preliminary run's predictions); the run directory contract is ``ffr.runs``. Ray glue:
``ray_train`` (TorchTrainer, Ray task). Orchestration:
``experiment.run_experiment`` (``run_pretrain``: stage 1 alone, for ``ffr study``); CLI: ``command`` (``ffr train``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ffr.training.config import TrainConfig


def __getattr__(name: str) -> Any:
    """``TrainConfig`` on first use: importing a module of this package (``ffr train --help`` imports
    ``ffr.training.command``) must not load the dataset readers and torch."""
    if name == "TrainConfig":
        from ffr.training.config import TrainConfig

        return TrainConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run_experiment(config: TrainConfig | dict, callbacks: list | None = None, log_executor: bool = True) -> dict:
    """Run every stage of one experiment (see :mod:`ffr.training.experiment`); returns the final result.

    ``callbacks``: Ray Train ``UserCallback`` objects for the stage-2 run (e.g. Tune's TuneReportCallback);
    ``log_executor``: print the executor ``executor: auto`` chose."""
    from ffr.training.experiment import run_experiment as _run

    return _run(config, callbacks, log_executor=log_executor)


def run_pretrain(config: TrainConfig | dict) -> dict:
    """Only the experiment's stage 1 (FFR's pretraining); its result (see :mod:`ffr.training.experiment`)."""
    from ffr.training.experiment import run_pretrain as _run

    return _run(config)


__all__ = ["TrainConfig", "run_experiment", "run_pretrain"]
