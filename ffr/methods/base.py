"""The contract every stage-2 method follows (DomainBed-style: one base class documents it all).

A method owns its whole behaviour; the training orchestration (``ffr.training``) only calls these hooks and
knows no method by name:
- ``loss(logits, targets, groups)``: a scalar, differentiable loss for one batch;
- ``sampling_weights(train_groups)`` and ``draws_per_epoch(n)``: how examples are drawn each epoch
  (``None`` = a plain shuffle without replacement);
- ``preliminary_run()`` (optional): a short run of another method trained before the main run, in its own
  sub-run directory (JTT's identification model). Its model's predictions on the training set go through
  ``preliminary_result`` (a JSON-able dict, saved as the sub-run's marker file) into ``use_preliminary``;
- ``fit_on_features(features, rng)`` (optional): a step after the best checkpoint is chosen, on the
  penultimate features of that model (DFR's last-layer retraining); its head then gives val/test numbers;
- ``extra_modules(model)``, ``extra_optimizers(modules, lr, weight_decay)`` and ``train_step(...)``
  (optional): modules trained beside the model (critics, adversaries) with their own optimiser steps. The
  loop moves, wraps and checkpoints them and calls ``train_step`` once per batch;
- ``build_model(model, spec)`` (optional): the model the method trains, made from the registered backbone
  (e.g. D3S's fg/bg feature split with a second head); the same call rebuilds it for evaluation;
- ``model_optimizers(model)`` (optional): further optimisers over the model's own parameters that the
  method steps itself (e.g. a warm-up optimiser), checkpointed with the extra ones;
- ``step_log()`` (optional): the last ``train_step``'s loss terms, logged per step (``steps.jsonl``, MLflow);
- ``mixes_class_only`` (a class flag): the method accepts batches where some rows come from a class-only
  stream (``mix`` in the training config; their group id is -1);
- ``analyze_features(model, features, rng)`` (optional): after the best checkpoint is chosen, analyses on
  its frozen features (e.g. linear probes) that do not replace its head; written to the result as they are.

Options are declared once, beside the method, as an ``Options`` model (``ffr.options``). An option that
sweeps may search carries its Tune space: ``searchable(default, ("loguniform", lo, hi), ge=...)``; ``tune/``
turns the space into Ray Tune domains, so the core never imports Ray.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ffr import options
from ffr.errors import FFRError
from ffr.groups import GroupSpec

SPACE_KINDS = ("loguniform", "uniform", "choice", "randint")
SPACE = "search_space"  # the key under a Field's json_schema_extra


def searchable(default: Any, space: tuple, **constraints: Any) -> Any:
    """A method option with its Tune search space: ("loguniform"|"uniform"|"randint", lo, hi) | ("choice", [..])."""
    if not space or space[0] not in SPACE_KINDS:
        raise ValueError(f"search space {space!r}: expected (kind, ...) with kind in {SPACE_KINDS}")
    return options.Field(default, json_schema_extra={SPACE: space}, **constraints)


def search_spaces(method: type[Method]) -> dict[str, tuple]:
    """The declared search space of each option of ``method`` that has one."""
    return {name: f.json_schema_extra[SPACE] for name, f in method.Options.model_fields.items()
            if isinstance(f.json_schema_extra, dict) and SPACE in f.json_schema_extra}


@dataclass(frozen=True)
class PreliminaryRun:
    """A run trained before the method's main run, on the same data, init and optimiser settings.

    ``name``: its sub-directory under the main run (and its marker file, ``<name>.json``); ``role``: the run's
    role in its config.json; ``method``/``method_hparams``: what it trains; ``epochs``: how long."""

    name: str
    role: str
    epochs: int
    method: str = "erm"
    method_hparams: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Features:
    """One split seen through a trained model: penultimate features, labels and (y, b) group ids."""

    x: np.ndarray
    y: np.ndarray
    groups: np.ndarray


@dataclass(frozen=True)
class FeatureFit:
    """The outcome of a post-fit step: ``predict`` (features → classes) and JSON-able details for the result."""

    predict: Callable[[np.ndarray], np.ndarray]
    details: dict[str, Any]


class Method:
    name: ClassVar[str] = ""
    Options: ClassVar[type[options.Options]] = options.NoOptions
    # True: train_step copes with rows of a class-only stream (group id -1) mixed into the batches.
    mixes_class_only: ClassVar[bool] = False
    # Set by the training loop under DDP: sums a tensor over workers (identity on one process).
    all_reduce: Callable[[torch.Tensor], torch.Tensor] = staticmethod(lambda t: t)

    def __init__(self, n_groups: int | None = None, group_counts: np.ndarray | None = None, **hparams: Any) -> None:
        self.options = options.parse(self.Options, hparams, "method_hparams", f"stage-2 method {self.name!r}")
        self.n_groups = n_groups
        self.group_counts = None if group_counts is None else np.asarray(group_counts, dtype=np.int64)
        # Filled by the loop from extra_modules / extra_optimizers (already on the device, DDP-wrapped).
        self.modules: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}

    def setup(self, train_groups: np.ndarray, n_groups: int) -> None:
        """Called once with the training set's group ids before the first epoch."""
        self.n_groups = n_groups
        self.group_counts = np.bincount(np.asarray(train_groups, dtype=np.int64), minlength=n_groups)

    # --- sampling -------------------------------------------------------------------------------------
    def sampling_weights(self, train_groups: np.ndarray) -> np.ndarray | None:
        return None

    def draws_per_epoch(self, n_examples: int) -> int:
        return n_examples

    # --- loss and the per-batch step ------------------------------------------------------------------
    def per_example_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets, reduction="none")

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        return self.per_example_loss(logits, targets).mean()

    def train_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, groups: torch.Tensor,
                   optimizer: torch.optim.Optimizer) -> torch.Tensor:
        """One optimisation step on one batch; returns the (detached or not) loss the epoch total reports.

        Override it for extra steps (a critic's own optimiser step before the model's, say); the modules and
        optimisers from ``extra_modules``/``extra_optimizers`` are in ``self.modules``/``self.optimizers``."""
        loss = self.loss(model(x), y, groups)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    # --- extra modules (critics) ----------------------------------------------------------------------
    def extra_modules(self, model: nn.Module) -> dict[str, nn.Module]:
        """Modules trained beside ``model`` (an ffr.backbones.Classifier: ``feature_dim``, ``features(x)``).
        Called once per run before any checkpoint is restored; the loop checkpoints their state."""
        return {}

    def extra_optimizers(self, modules: Mapping[str, nn.Module], lr: float,
                         weight_decay: float) -> dict[str, torch.optim.Optimizer]:
        """Optimisers of the extra modules (already on the device); checkpointed by the loop."""
        return {}

    # --- the model the method trains ------------------------------------------------------------------
    def build_model(self, model: nn.Module, spec: GroupSpec) -> nn.Module:
        """The model to train, made from the registered backbone ``model`` (an ffr.backbones.Classifier with
        ``spec.n_classes`` outputs) before any checkpoint is restored; evaluation calls it again to rebuild
        the same model. The default trains the backbone as it is."""
        return model

    def model_optimizers(self, model: nn.Module) -> dict[str, torch.optim.Optimizer]:
        """Optimisers over ``model``'s own parameters that ``train_step`` uses besides the loop's (e.g. a
        warm-up optimiser); checkpointed with the extra optimisers (names must differ from theirs)."""
        return {}

    def step_log(self) -> dict[str, float] | None:
        """The last ``train_step``'s terms to log at this step (floats), or None (nothing logged per step)."""
        return None

    # --- analyses of the trained model's features (e.g. probes) ----------------------------------------
    def analyze_features(self, model: nn.Module, features: Mapping[str, Features],
                         rng: np.random.Generator) -> dict[str, Any] | None:
        """After the best checkpoint is chosen: analyses on its frozen penultimate features of ``train``,
        ``val``, ``test`` (and ``mix``, the class-only stream, when the run has one). Returns JSON-able
        results for the result file (a ``probes`` entry there is also logged to MLflow and shown by
        ``ffr report``), or None. Unlike ``fit_on_features`` it leaves the model's val/test numbers alone."""
        return None

    @classmethod
    def analyzes_features(cls) -> bool:
        return cls.analyze_features is not Method.analyze_features

    # --- preliminary run (e.g. JTT's identification) --------------------------------------------------
    def preliminary_run(self) -> PreliminaryRun | None:
        """What to train before the main run, or None."""
        return None

    def preliminary_result(self, predictions: np.ndarray, targets: np.ndarray, groups: np.ndarray) -> dict:
        """The preliminary model's final predictions on the training set → a JSON-able result."""
        raise FFRError(f"method {self.name!r} declares no preliminary run")

    def preliminary_summary(self, result: dict) -> str:
        """One log line about the preliminary result."""
        return f"preliminary run of {self.name}: done"

    def use_preliminary(self, result: dict) -> None:
        """Receive the preliminary result before training (and before a checkpoint is restored)."""

    # --- post-fit step on features (e.g. DFR) ---------------------------------------------------------
    def fit_on_features(self, features: Mapping[str, Features], rng: np.random.Generator) -> FeatureFit | None:
        """After the best checkpoint is chosen: fit on its features of the real ``train``/``val``/``test``
        splits. None (the default) keeps the model's own head."""
        return None

    @classmethod
    def fits_on_features(cls) -> bool:
        return cls.fit_on_features is not Method.fit_on_features

    # --- state that must survive checkpoints ----------------------------------------------------------
    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def inverse_frequency(train_groups: np.ndarray, group_counts: np.ndarray) -> np.ndarray:
    """Per-example N / n_g; the weight that makes every non-empty group equally likely."""
    g = np.asarray(train_groups, dtype=np.int64)
    counts = np.asarray(group_counts, dtype=np.float64)
    if np.any(counts[g] == 0):
        raise FFRError("a training example belongs to a group with count 0; group counts do not match the data")
    return len(g) / counts[g]
