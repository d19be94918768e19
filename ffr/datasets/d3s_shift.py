"""``d3s-shift``: a D3S output's correlated / anti-correlated split views (:mod:`ffr.datasets.d3s_splits`)
as grouped data.

Class = super-class (ImageNet-9 by default), bias = background, so a group is (super-class, background) and
worst-group accuracy means what D3S's experiment measures. ``train`` is the correlated view (each super-class
on its one assigned background); ``val`` and ``test`` split the anti-correlated view (every other background)
by the seed, ``val_fraction`` to val. Images are read from the shards the views point into.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from ffr.datasets.base import GroupedSplit, reader
from ffr.datasets.synthetic import ShardImages
from ffr.groups import SYNTHETIC, GroupSpec
from ffr.options import Field, Options, PathField
from ffr.shards import ShardReader


def _table(view: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"key": view["image_key"].astype(str), "y": view["superclass"].astype(np.int64),
                         "b": view["b"].astype(np.int64), "source": SYNTHETIC, "id": view["id"].astype(str)})


class D3SShiftOptions(Options):
    root: str = PathField(description="a D3S generation output (local or s3://)")
    split: str = Field(description="the split views' name under root/splits/ (ffr d3s splits --name)")
    bias_ratio: float | None = Field(None, description="ignored: the views fix the correlation")
    seed: int = Field(0, ge=0, strict=True, description="seed of the val/test split of the anti-correlated view")
    val_fraction: float = Field(0.5, gt=0.0, lt=1.0, description="share of the anti-correlated view going to val")
    review: Literal["accepted"] | None = Field(None, description="'accepted': only images human review accepted")


@reader("d3s-shift", D3SShiftOptions)
def d3s_shift(options: D3SShiftOptions) -> dict[str, GroupedSplit]:
    """Views ``split`` (a name under ``root/splits/``) of the D3S output ``root``."""
    from ffr.datasets.d3s_splits import read_view

    root, seed, val_fraction = options.root, options.seed, options.val_fraction
    correlated, record = read_view(root, options.split, "correlated")
    anti, _ = read_view(root, options.split, "anti-correlated")
    if options.review == "accepted":
        from ffr.datasets.reviewed import accepted_ids

        keep = accepted_ids(root)
        correlated, anti = (v[v["id"].astype(str).isin(keep)] for v in (correlated, anti))
    shards = ShardReader(root)
    spec = GroupSpec(tuple(record["superclasses"]), shards.spec.bias_names)
    anti_table = _table(anti)
    to_val = np.random.default_rng([int(seed), 5]).random(len(anti_table)) < float(val_fraction)
    parts = {"train": _table(correlated), "val": anti_table[to_val], "test": anti_table[~to_val]}
    load = ShardImages.of(shards)
    return {name: GroupedSplit(spec, part, load, name) for name, part in parts.items()}
