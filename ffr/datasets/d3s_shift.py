"""``d3s-shift``: a D3S output's correlated / anti-correlated split views (:mod:`ffr.d3s.splits`) as grouped data.

Class = super-class (ImageNet-9 by default), bias = background, so a group is (super-class, background) and
worst-group accuracy means what D3S's experiment measures. ``train`` is the correlated view (each super-class
on its one assigned background); ``val`` and ``test`` split the anti-correlated view (every other background)
by the seed, ``val_fraction`` to val. Images are read from the shards the views point into.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ffr.datasets.base import DATASETS, GroupedSplit
from ffr.datasets.synthetic import ShardImages
from ffr.errors import FFRError
from ffr.groups import SYNTHETIC, GroupSpec
from ffr.shards import ShardReader


def _table(view: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"key": view["image_key"].astype(str), "y": view["superclass"].astype(np.int64),
                         "b": view["b"].astype(np.int64), "source": SYNTHETIC, "id": view["id"].astype(str)})


@DATASETS.register("d3s-shift")
def d3s_shift(root: str, split: str, bias_ratio: float | None = None, seed: int = 0, val_fraction: float = 0.5,
              review: str | None = None) -> dict[str, GroupedSplit]:
    """Views ``split`` (a name under ``root/splits/``) of the D3S output ``root``; ``bias_ratio`` does not
    apply (the views fix the correlation) and is ignored. ``review: accepted`` keeps reviewed images only."""
    from ffr.d3s.splits import read_view

    if not 0.0 < float(val_fraction) < 1.0:
        raise FFRError(f"val_fraction = {val_fraction!r}; expected a number between 0 and 1")
    correlated, record = read_view(root, split, "correlated")
    anti, _ = read_view(root, split, "anti-correlated")
    if review == "accepted":
        from ffr.review.views import accepted_ids

        keep = accepted_ids(root)
        correlated, anti = (v[v["id"].astype(str).isin(keep)] for v in (correlated, anti))
    elif review is not None:
        raise FFRError(f"review = {review!r}; expected 'accepted' or null")
    reader = ShardReader(root)
    spec = GroupSpec(tuple(record["superclasses"]), reader.spec.bias_names)
    anti_table = _table(anti)
    to_val = np.random.default_rng([int(seed), 5]).random(len(anti_table)) < float(val_fraction)
    parts = {"train": _table(correlated), "val": anti_table[to_val], "test": anti_table[~to_val]}
    load = ShardImages.of(reader)
    return {name: GroupedSplit(spec, part, load, name) for name, part in parts.items()}
