"""Budgets are counts of *accepted* images per group; this module decides how many rows to generate for them.

Filters reject images (black, grayscale, low CLIP score), so a run plans rounds: round 0 generates each
group's target, and every later round generates, for each group still short, its deficit divided by the
acceptance rate seen so far. The k-th image of a group always has the id ``g{group}-{k}`` and a seed derived
from (run seed, id), so extra rounds only ever append the next ids of each group: a rerun plans exactly the
same rows, and a larger budget extends an output with new ids while every finished shard stays as it is.
``budget.max_factor`` caps the rows per group at ``max_factor × target``; a group that cannot reach its
target under the cap stops the run with one line naming the group.

Which real counts: ``budget.real_counts`` are the counts of the real *training* set as training sees it,
i.e. after bias-ratio downsampling (``ffr.balance.keep_counts``) — the same counts the usb/asb/ffr variants
compute their synthetic counts from (``ffr.variants``). ``ffr balance --budget-block`` prints the block.

Which groups: the populated ones the recipe's dataset declares (``GroupSpec.populated``; SpuCo Animals has 8 of
its 16 (class, background) pairs), so ``per_group: 20000`` plans 8 × 20,000 there, not 16 × 20,000. A budget
that names a pair which is not a group of the dataset is refused in one line.
"""

from __future__ import annotations

import math
from typing import Any

from ffr.balance import budget_counts
from ffr.errors import FFRError
from ffr.groups import GroupSpec
from ffr.options import group_key
from pipelines.config import BudgetConfig


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FFRError(f"{where} = {value!r}; expected a non-negative integer")
    return value


def _group_counts(mapping: dict, spec: GroupSpec, where: str) -> dict[tuple[int, int], int]:
    """{"y,b": n} in any spelling ffr.options.group_key accepts → {(y, b): n}, range-checked; a pair that is not
    one of the dataset's groups is refused, naming it and the groups that exist."""
    out = {}
    for k, v in mapping.items():
        y, b = group_key(k, f"{where} key", spec.n_classes, spec.n_bias)
        if not spec.is_populated(y, b):
            groups = ", ".join(f"{gy},{gb} ({spec.pair_name(gy, gb)})" for gy, gb in spec.pairs())
            raise FFRError(f"{where} names group {k!r} ({spec.pair_name(y, b)}), which this dataset does not have; "
                           f"expected one of its {len(spec.pairs())} groups: {groups}")
        out[(y, b)] = _count(v, f"{where}[{k!r}]")
    return out


def group_budgets(spec: GroupSpec, budget: BudgetConfig) -> dict[tuple[int, int], int]:
    """Accepted images wanted per populated (y, b): an explicit number (per group or one for all) or FFR's rule."""
    if (budget.per_group is None) == (budget.real_counts is None):
        raise FFRError("config section 'budget' needs exactly one of 'per_group' (images per group) or "
                       "'real_counts' (the real training set's {'y,b': n} after bias-ratio downsampling, with 'mode')")
    groups = spec.pairs()
    if budget.real_counts is not None:
        if not isinstance(budget.real_counts, dict) or not budget.real_counts:
            raise FFRError(f"budget.real_counts = {budget.real_counts!r}; expected a mapping {{'y,b': count}}")
        real = _group_counts(budget.real_counts, spec, "budget.real_counts")
        return {g: budget_counts(real, budget.mode).get(g, 0) for g in groups}
    if isinstance(budget.per_group, dict):
        explicit = _group_counts(budget.per_group, spec, "budget.per_group")
        return {g: explicit.get(g, 0) for g in groups}
    n = _count(budget.per_group, "budget.per_group")
    return {g: n for g in groups}


def cap(target: int, max_factor: float) -> int:
    """The most rows a group may generate: ``ceil(max_factor × target)``."""
    return math.ceil(max_factor * target - 1e-9)


def extra_rows(targets: dict[int, int], planned: dict[int, int], accepted: dict[int, int], max_factor: float,
               names: dict[int, str]) -> dict[int, int]:
    """Rows to add per group id so each short group can reach its target; {} when every group has.

    The estimate divides the deficit by the group's acceptance rate so far (floored at 1 / max_factor, so a
    group with nothing accepted yet asks for the most the cap allows). Raises when a short group is at its cap.
    """
    out: dict[int, int] = {}
    for g, target in sorted(targets.items()):
        got, rows = accepted.get(g, 0), planned.get(g, 0)
        if got >= target:
            continue
        limit = cap(target, max_factor)
        if rows >= limit:
            raise FFRError(f"group {names.get(g, g)!r} has {got} of its {target} accepted images after generating "
                           f"{rows} (the cap budget.max_factor={max_factor:g} × {target} = {limit}); raise "
                           "budget.max_factor, loosen the filters, or lower the budget")
        rate = got / rows if rows else 1.0
        out[g] = min(math.ceil((target - got) / max(rate, 1.0 / max_factor)), limit - rows)
    return out
