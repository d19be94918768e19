"""FFR's counting rules: bias-ratio downsampling and synthetic budgets.

Every table the project prints is computed from these few lines, so they follow the FFR paper's code
exactly (``make_harder`` and ``load_gen_data[_balance]``) and are tested against hand-computed cases.
"""

from __future__ import annotations

import math

import numpy as np

from ffr.errors import FFRError

Counts = dict[tuple[int, int], int]
SYNTHETIC_MODES = ("usb", "asb", "ffr")
BUDGET_MODES = (*SYNTHETIC_MODES, "all")  # "all": one generation output that serves usb, asb and ffr
VAL_FLOOR = 10  # FFR keeps at least 10 examples per validation group so WGA is measurable


def _check_counts(counts: Counts) -> None:
    if not counts:
        raise FFRError("group counts are empty; expected a dict {(class, bias): count} with at least one group")
    for group, n in counts.items():
        if not (isinstance(group, tuple) and len(group) == 2):
            raise FFRError(f"group key {group!r} is not a (class, bias) pair")
        if int(n) != n or n < 0:
            raise FFRError(f"count for group {group} is {n!r}; expected a non-negative integer")


def check_bias_ratio(bias_ratio: float) -> float:
    try:
        r = float(bias_ratio)
    except (TypeError, ValueError):
        raise FFRError(f"bias ratio {bias_ratio!r} is not a number; expected a value in (0.5, 1)") from None
    if not 0.5 < r < 1.0:
        raise FFRError(f"bias ratio {bias_ratio!r} is outside (0.5, 1)")
    return r


def keep_counts(counts: Counts, bias_ratio: float, floor: int = 0) -> Counts:
    """How many examples each group keeps at bias ratio r.

    Per class y with largest group ``M_y`` (the majority; the first one on ties), every other group keeps
    ``min(n_g, max(ceil(M_y * (1 - r) / r), floor))`` so the minority share of the class is about 1 - r.
    ``floor`` is 0 for train and 10 for validation; the test split is never downsampled.
    """
    _check_counts(counts)
    r = check_bias_ratio(bias_ratio)
    if floor < 0:
        raise FFRError(f"floor {floor!r} is negative; expected 0 (train) or 10 (validation)")
    kept: Counts = {}
    for y in sorted({g[0] for g in counts}):
        class_groups = sorted(g for g in counts if g[0] == y)
        majority = max(class_groups, key=lambda g: counts[g])
        target = max(math.ceil(counts[majority] * (1 - r) / r), floor)
        for g in class_groups:
            kept[g] = int(counts[g]) if g == majority else min(int(counts[g]), target)
    return kept


def synthetic_counts(counts: Counts, mode: str) -> Counts:
    """Synthetic images per group for a mixing baseline or for FFR's stage 1.

    - ``usb``: fill every group to the largest group M overall: ``M - n_g`` each.
    - ``asb``: the same ``k = floor(S / G)`` for every group, S = the USB total, G = number of groups.
    - ``ffr``: the synthetic-only stage-1 set, also k per group (same budget as USB, but balanced).
    """
    _check_counts(counts)
    if mode not in SYNTHETIC_MODES:
        raise FFRError(f"synthetic mode {mode!r} is unknown; expected one of {', '.join(SYNTHETIC_MODES)}")
    largest = max(counts.values())
    usb = {g: int(largest - n) for g, n in counts.items()}
    if mode == "usb":
        return usb
    k = sum(usb.values()) // len(counts)
    return {g: k for g in counts}


def budget_counts(counts: Counts, mode: str) -> Counts:
    """Synthetic images to generate per group: one mode's counts, or ``all`` = the per-group maximum over the
    three, so one output feeds every variant (each variant then draws its own counts from it).

    ``counts`` are the real training set's group counts *after* bias-ratio downsampling (:func:`keep_counts`):
    the set the synthetic images are mixed with or stand in for."""
    if mode == "all":
        per_mode = [synthetic_counts(counts, m) for m in SYNTHETIC_MODES]
        return {g: max(c[g] for c in per_mode) for g in counts}
    if mode not in SYNTHETIC_MODES:
        raise FFRError(f"budget mode {mode!r} is unknown; expected one of {', '.join(BUDGET_MODES)}")
    return synthetic_counts(counts, mode)


def downsample_indices(y: np.ndarray, b: np.ndarray, bias_ratio: float, floor: int,
                       rng: np.random.Generator) -> np.ndarray:
    """Indices (sorted) of the examples kept at ``bias_ratio``; which ones is decided by ``rng``."""
    y, b = np.asarray(y), np.asarray(b)
    present = {(int(yy), int(bb)) for yy, bb in zip(y, b)}
    counts = {g: int(np.sum((y == g[0]) & (b == g[1]))) for g in sorted(present)}
    kept = keep_counts(counts, bias_ratio, floor)
    keep: list[np.ndarray] = []
    for g in sorted(kept):
        members = np.flatnonzero((y == g[0]) & (b == g[1]))
        keep.append(members if kept[g] == len(members) else rng.choice(members, kept[g], replace=False))
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)
