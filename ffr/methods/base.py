"""The contract every stage-2 method follows (DomainBed-style: one base class documents it all).

A method decides two things about training on grouped data:
- ``loss(logits, targets, groups)``: a scalar, differentiable loss for one batch;
- ``sampling_weights(train_groups)`` and ``draws_per_epoch(n)``: how examples are drawn each epoch
  (``None`` = a plain shuffle without replacement).

Hyperparameters are declared once, beside the method, as ``HParam(name, default, space)``; ``tune/``
turns ``space`` into Ray Tune search spaces, so the core never imports Ray.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ffr.errors import FFRError


@dataclass(frozen=True)
class HParam:
    name: str
    default: Any
    # ("loguniform", lo, hi) | ("uniform", lo, hi) | ("choice", [values]) | ("randint", lo, hi)
    space: tuple


class Method:
    name: ClassVar[str] = ""
    hparams: ClassVar[tuple[HParam, ...]] = ()
    # Set by the training loop under DDP: sums a tensor over workers (identity on one process).
    all_reduce: Callable[[torch.Tensor], torch.Tensor] = staticmethod(lambda t: t)

    def __init__(self, n_groups: int | None = None, group_counts: np.ndarray | None = None, **hparams: Any) -> None:
        known = {h.name: h.default for h in self.hparams}
        unknown = sorted(set(hparams) - set(known))
        if unknown:
            raise FFRError(f"method {self.name!r} has no hyperparameter {unknown[0]!r}; "
                           f"expected one of: {', '.join(sorted(known)) or '(none)'}")
        known.update(hparams)
        self.config: dict[str, Any] = known
        self.n_groups = n_groups
        self.group_counts = None if group_counts is None else np.asarray(group_counts, dtype=np.int64)
        self._check()

    def _check(self) -> None:
        """Validate hyperparameter values; subclasses raise FFRError naming the bad value."""

    def setup(self, train_groups: np.ndarray, n_groups: int) -> None:
        """Called once with the training set's group ids before the first epoch."""
        self.n_groups = n_groups
        self.group_counts = np.bincount(np.asarray(train_groups, dtype=np.int64), minlength=n_groups)

    # --- sampling -------------------------------------------------------------------------------------
    def sampling_weights(self, train_groups: np.ndarray) -> np.ndarray | None:
        return None

    def draws_per_epoch(self, n_examples: int) -> int:
        return n_examples

    # --- loss -----------------------------------------------------------------------------------------
    def per_example_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets, reduction="none")

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        return self.per_example_loss(logits, targets).mean()

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
