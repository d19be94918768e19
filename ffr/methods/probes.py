"""Linear heads on frozen features, trained as D3S trains its probes and its spurious-correlation heads: SGD
(lr 1e-3, momentum 0.9, weight decay 1e-4 in D3S) on mini-batches drawn at random, for a number of steps.

``fit_linear_head`` trains one head; ``select_on`` scores it every ``eval_every`` steps on a held-out set and keeps
the best (the selection the spurious-correlation experiment makes on correlated val). ``standardize`` z-scores
the features with the training set's statistics first (not in D3S; it only rescales the inputs, so the heads
reach the same functions in fewer steps). Plain torch on in-memory arrays, no Ray.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ffr.options import Field, Options


class ProbeOptions(Options):
    steps: int = Field(100_000, ge=1, description="SGD steps (D3S: 100,000)")
    batch_size: int = Field(64, ge=1, description="examples per step (D3S: 64)")
    lr: float = Field(1e-3, gt=0, description="SGD learning rate (D3S: 1e-3)")
    momentum: float = Field(0.9, ge=0, description="SGD momentum (D3S: 0.9)")
    weight_decay: float = Field(1e-4, ge=0, description="SGD weight decay (D3S: 1e-4)")
    standardize: bool = Field(False, description="z-score features with the training set's statistics first")
    eval_every: int = Field(500, ge=1, description="steps between scores on the selection set (when selecting)")


@dataclass
class LinearHead:
    """A trained head: ``predict(features) -> classes``; ``history`` = (step, selection score) when selected."""

    weight: np.ndarray
    bias: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    best_step: int
    history: list[tuple[int, float]] = field(default_factory=list)

    def logits(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, np.float32) - self.mean) / self.scale) @ self.weight.T + self.bias

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.logits(x).argmax(1) if len(x) else np.zeros(0, np.int64)


def fit_linear_head(x: np.ndarray, y: np.ndarray, n_out: int, options: ProbeOptions, seed: int,
                    select_on: Callable[[LinearHead], float] | None = None) -> LinearHead:
    """A linear head (features → ``n_out`` classes) trained with SGD on (x, y); with ``select_on`` (a score,
    higher is better) the head of the best scored step, scored every ``eval_every`` steps and at the end."""
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.int64)
    if len(x) == 0:
        raise ValueError("a linear head needs at least one training example")
    mean = x.mean(0) if options.standardize else np.zeros(x.shape[1], np.float32)
    scale = x.std(0) + 1e-6 if options.standardize else np.ones(x.shape[1], np.float32)
    gen = torch.Generator().manual_seed(int(seed))
    features = torch.from_numpy((x - mean) / scale)
    targets = torch.from_numpy(y)
    head = torch.nn.Linear(x.shape[1], n_out)
    with torch.no_grad():  # seeded init, independent of the global RNG
        bound = 1 / np.sqrt(x.shape[1])
        head.weight.uniform_(-bound, bound, generator=gen)
        head.bias.uniform_(-bound, bound, generator=gen)
    optimizer = torch.optim.SGD(head.parameters(), lr=options.lr, momentum=options.momentum,
                                weight_decay=options.weight_decay)

    def snapshot(step: int) -> LinearHead:
        return LinearHead(head.weight.detach().numpy().copy(), head.bias.detach().numpy().copy(), mean, scale, step)

    best, best_score, history = None, -np.inf, []
    for step in range(1, options.steps + 1):
        idx = torch.randint(len(features), (min(options.batch_size, len(features)),), generator=gen)
        loss = F.cross_entropy(head(features[idx]), targets[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if select_on is not None and (step % options.eval_every == 0 or step == options.steps):
            current = snapshot(step)
            score = float(select_on(current))
            history.append((step, score))
            if score > best_score:  # ties keep the earlier step
                best, best_score = current, score
    result = best if best is not None else snapshot(options.steps)
    result.history = history
    return result


def accuracy(predictions: np.ndarray, targets: np.ndarray) -> float:
    return float((np.asarray(predictions) == np.asarray(targets)).mean()) if len(targets) else float("nan")


def majority_rate(targets: np.ndarray) -> float:
    """The accuracy of always answering the most common label (a chance level that accounts for imbalance)."""
    targets = np.asarray(targets)
    return float(np.bincount(targets).max() / len(targets)) if len(targets) else float("nan")
