"""Reproducible splits and FFR's bias-ratio downsampling, shared by every reader.

``random_split`` assigns each example to train/val/test from a seed (a shuffled 80/10/10 by default, as the
FFR code does); ``apply_bias_ratio`` downsamples train (floor 0) and val (floor 10) with ``ffr.balance``'s
exact rule and never touches test.
"""

from __future__ import annotations

import numpy as np

from ffr.balance import VAL_FLOOR, downsample_indices
from ffr.datasets.base import GroupedSplit
from ffr.errors import FFRError


def random_split(n: int, seed: int, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> np.ndarray:
    """An array of 'train'/'val'/'test' labels for n examples, decided by ``seed`` alone."""
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise FFRError(f"split fractions {fractions!r} must be three non-negative numbers summing to 1")
    order = np.random.default_rng(seed).permutation(n)
    n_train, n_val = int(round(fractions[0] * n)), int(round(fractions[1] * n))
    labels = np.empty(n, dtype=object)
    labels[order[:n_train]] = "train"
    labels[order[n_train:n_train + n_val]] = "val"
    labels[order[n_train + n_val:]] = "test"
    return labels


def apply_bias_ratio(splits: dict[str, GroupedSplit], bias_ratio: float | None, seed: int) -> dict[str, GroupedSplit]:
    """Downsample train and val to ``bias_ratio`` (None = keep as is); test is never downsampled."""
    if bias_ratio is None:
        return splits
    rng = np.random.default_rng(seed)
    out = dict(splits)
    for name, floor in (("train", 0), ("val", VAL_FLOOR)):
        if name in splits:
            s = splits[name]
            out[name] = s.subset(downsample_indices(s.y, s.b, bias_ratio, floor, rng))
    return out
