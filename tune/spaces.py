"""Search spaces: the (kind, ...) tuples declared beside each method's options → Ray Tune domains.

``ffr.methods`` declares each option with its space (``searchable(default, space, ...)`` in the method's
``Options`` model) without importing Ray; this is the one place that turns those tuples (and the same tuples
written in sweep configs) into ``ray.tune`` sampling objects.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from ray import tune

from ffr.errors import FFRError
from ffr.methods import METHODS, search_spaces

KINDS = ("loguniform", "uniform", "choice", "randint", "grid")


def to_domain(space: Any, where: str):
    """('loguniform', lo, hi) | ('uniform', lo, hi) | ('randint', lo, hi) | ('choice', [..]) | ('grid', [..])."""
    if not isinstance(space, (list, tuple)) or not space or space[0] not in KINDS:
        raise FFRError(f"search space for {where!r} is {space!r}; expected [kind, ...] with kind in {', '.join(KINDS)}")
    kind, *args = space
    if kind in ("choice", "grid"):
        if len(args) != 1 or not isinstance(args[0], (list, tuple)) or not args[0]:
            raise FFRError(f"search space for {where!r}: {kind} needs one non-empty list of values, got {args!r}")
        values = [list(v) if isinstance(v, tuple) else v for v in args[0]]
        return tune.grid_search(values) if kind == "grid" else tune.choice(values)
    if len(args) != 2 or not all(isinstance(a, (int, float)) for a in args) or not args[0] < args[1]:
        raise FFRError(f"search space for {where!r}: {kind} needs two numbers lo < hi, got {args!r}")
    if kind == "loguniform":
        if args[0] <= 0:
            raise FFRError(f"search space for {where!r}: loguniform needs lo > 0, got {args[0]!r}")
        return tune.loguniform(*args)
    return tune.uniform(*args) if kind == "uniform" else tune.randint(*args)


def method_space(name: str) -> dict[str, Any]:
    """The declared search space of one registered method (empty when it has no hyperparameters)."""
    return {key: to_domain(space, f"{name}.{key}") for key, space in search_spaces(METHODS.get(name)).items()}


def _sample(space: Any, rng: np.random.Generator) -> Any:
    """One draw of a random kind, with numpy (seeded by the caller), as Tune would draw it."""
    kind, *args = space
    if kind == "choice":
        values = [list(v) if isinstance(v, tuple) else v for v in args[0]]
        return values[int(rng.integers(len(values)))]
    lo, hi = args
    if kind == "loguniform":
        return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    if kind == "uniform":
        return float(rng.uniform(lo, hi))
    return int(rng.integers(lo, hi))  # randint: hi excluded, as in Tune


def expand(spaces: dict[str, Any], rng: np.random.Generator, where: str = "") -> list[dict[str, Any]]:
    """Every combination of the ``grid`` entries, each with one seeded draw of the random ones
    (loguniform / uniform / randint / choice): the configurations a sweep or study runs, each with every seed."""
    for key, space in spaces.items():
        to_domain(space, f"{where}{key}")  # validated: one line naming a bad space
    grid = {k: [list(v) if isinstance(v, tuple) else v for v in s[1]] for k, s in spaces.items() if s[0] == "grid"}
    out = []
    for values in itertools.product(*grid.values()):
        combination = dict(zip(grid, values))
        combination.update({k: _sample(s, rng) for k, s in spaces.items() if s[0] != "grid"})
        out.append(combination)
    return out
