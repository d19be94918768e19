"""Which examples each worker trains on in an epoch — correct under DDP.

A method asks for ``draws_per_epoch(N)`` draws *in total* (with replacement when it gives sampling weights,
a plain shuffle otherwise). Every worker computes the same global draw from a generator seeded by (seed,
epoch) and keeps a strided slice, so the workers together make exactly the method's draws — not N each.
The draw is padded by repeating its first entries up to a multiple of the world size (as torch's
DistributedSampler does) so every worker runs the same number of batches.
"""

from __future__ import annotations

import numpy as np
import torch

from ffr.errors import FFRError


def global_draw(n_examples: int, weights: np.ndarray | None, draws: int, seed: int, epoch: int,
                stream: int = 0) -> np.ndarray:
    """The epoch's draws over all workers, before padding and slicing. Without weights: successive
    reshuffled passes (step-based epochs may draw more than one pass). ``stream`` > 0 gives an independent
    draw for a second data stream of the same run (e.g. the class-only stream mixed into each batch)."""
    if n_examples == 0:
        raise FFRError("the training set is empty; check the dataset options and variant")
    rng = np.random.default_rng([int(seed), int(epoch), 7, *([int(stream)] if stream else [])])
    if weights is None:
        passes = [rng.permutation(n_examples) for _ in range(max(1, -(-int(draws) // n_examples)))]
        order = passes[0] if len(passes) == 1 else np.concatenate(passes)
        return order if draws == n_examples else order[:draws]
    w = np.asarray(weights, dtype=np.float64)
    if len(w) != n_examples or np.any(w < 0) or w.sum() <= 0:
        raise FFRError(f"sampling weights must be {n_examples} non-negative numbers with a positive sum")
    return rng.choice(n_examples, size=int(draws), replace=True, p=w / w.sum())


def worker_indices(n_examples: int, weights: np.ndarray | None, draws: int, seed: int, epoch: int,
                   rank: int, world_size: int, stream: int = 0) -> np.ndarray:
    """This worker's share of the epoch's draws (``ceil(draws / world_size)`` indices)."""
    if not 0 <= rank < world_size:
        raise FFRError(f"rank {rank} is outside world size {world_size}")
    drawn = global_draw(n_examples, weights, draws, seed, epoch, stream)
    padded = np.resize(drawn, -(-len(drawn) // world_size) * world_size)
    return padded[rank::world_size]


class EpochSampler(torch.utils.data.Sampler):
    """A DataLoader sampler yielding this worker's indices; call ``set_epoch`` before each epoch.

    ``tagged``: yield ``(epoch, position, index)`` instead, ``position`` being the draw's place in the epoch's global
    (padded) draw, for datasets whose items change from draw to draw (``loop.CorruptedImageDataset``). The sampler
    runs in the training process, so the tag reaches persistent DataLoader workers with every index."""

    def __init__(self, n_examples: int, weights: np.ndarray | None, draws: int, seed: int,
                 rank: int = 0, world_size: int = 1, tagged: bool = False, stream: int = 0) -> None:
        self.n_examples, self.weights, self.draws, self.seed = n_examples, weights, draws, seed
        self.rank, self.world_size, self.tagged, self.stream = rank, world_size, tagged, stream
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.indices = worker_indices(self.n_examples, self.weights, self.draws, self.seed, epoch,
                                      self.rank, self.world_size, self.stream)

    def __iter__(self):
        if self.tagged:
            positions = self.rank + self.world_size * np.arange(len(self.indices))
            return iter([(self.epoch, int(p), int(i)) for p, i in zip(positions, self.indices)])
        return iter(self.indices.tolist())

    def __len__(self) -> int:
        return len(self.indices)
