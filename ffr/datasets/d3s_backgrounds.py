"""``d3s``: a D3S generation output as class × background data (class = the generated class, bias = background).

What D3S's disentanglement trains and is probed on: ``train`` is the output at ``root``; ``val`` and ``test`` are
the halves (by the seed) of a second output ``val_root`` (D3S's val set was a run of its own), or, without one,
of a held-out share ``val_fraction`` of ``root`` chosen by a hash of (seed, image id) — the rule
:func:`ffr.datasets.d3s_splits.held_out`, which ``ffr d3s correlation`` applies too, so a model trained here never
saw the images that experiment validates and tests on. Images are read from the shards.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from ffr.datasets.base import GroupedSplit, ReferenceCounts, reader
from ffr.datasets.d3s_splits import held_out
from ffr.datasets.reviewed import filter_reviewed
from ffr.datasets.synthetic import ShardImages
from ffr.errors import FFRError
from ffr.groups import SYNTHETIC
from ffr.options import Field, Options, PathField
from ffr.shards import ShardReader


class D3SOptions(Options):
    root: str = PathField(description="a D3S generation output (recipe d3s-background; local or s3://)")
    val_root: str | None = PathField(None, description="a second output for val and test (halves, by the seed)")
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="without val_root: the share of root held out "
                                                                  "for val + test (by a hash of seed and id)")
    seed: int = Field(0, ge=0, strict=True, description="seed of the held-out share and of the val/test halves")
    review: Literal["accepted"] | None = Field(None, description="'accepted': only images human review accepted")
    bias_ratio: float | None = Field(None, description="ignored: every (class, background) cell is kept")


def shard_table(shards: ShardReader, root: str, review: str | None) -> pd.DataFrame:
    meta = shards.metadata
    table = pd.DataFrame({"key": meta["image_key"].astype(str), "y": meta["y"].astype(np.int64),
                          "b": meta["b"].astype(np.int64), "source": SYNTHETIC, "id": meta["id"].astype(str)})
    table = table.sort_values("id", kind="stable").reset_index(drop=True)  # shard timing never reorders rows
    return filter_reviewed(table, root, review).reset_index(drop=True)


D3S_PER_CELL = 12  # configs/generate-d3s-background.yaml: 1000 classes × 10 backgrounds × 12 = 120K


def _reference(options: D3SOptions) -> ReferenceCounts:
    """The shipped 120K D3S config's counts (12 per class × background); with ``val_root``, a second output of the
    same config (as the walk-through in docs/d3s.md makes it), halved into val and test."""
    import csv

    from ffr.datasets.d3s_shift import background_labels, recipe_data
    from ffr.groups import GroupSpec

    with recipe_data("imagenet_classes.tsv").open() as f:
        names = tuple(row["name"] for row in csv.DictReader(f, delimiter="\t"))
    labels = background_labels()
    cells = [(c, b) for c in range(len(names)) for b in range(len(labels))]
    held = D3S_PER_CELL if options.val_root else round(D3S_PER_CELL * options.val_fraction)  # val + test per cell
    train = D3S_PER_CELL if options.val_root else D3S_PER_CELL - held
    splits = {"train": dict.fromkeys(cells, train), "val": dict.fromkeys(cells, held // 2),
              "test": dict.fromkeys(cells, held - held // 2)}
    where = "and as many in val_root, halved" if options.val_root else f"{options.val_fraction:g} of it held out"
    return ReferenceCounts(f"configs/generate-d3s-background.yaml's 120K images ({D3S_PER_CELL} per class × "
                           f"background), {where}", GroupSpec(names, labels), splits, pixels=512 * 512)


@reader("d3s", D3SOptions, reference=_reference)
def d3s(options: D3SOptions) -> dict[str, GroupedSplit]:
    shards = ShardReader(options.root)
    table = shard_table(shards, options.root, options.review)
    load = ShardImages.of(shards)
    if options.val_root is None:
        out = held_out(table["id"], options.seed, options.val_fraction)
        train, rest, rest_load = table[~out], table[out], load
    else:
        others = ShardReader(options.val_root)
        if others.spec != shards.spec:
            raise FFRError(f"d3s: val_root {options.val_root!r} has groups {others.spec.class_names[:3]}... × "
                           f"{others.spec.bias_names}; expected those of root {options.root!r}")
        train, rest, rest_load = table, shard_table(others, options.val_root, options.review), ShardImages.of(others)
    to_val = np.random.default_rng([options.seed, 5]).random(len(rest)) < 0.5
    return {"train": GroupedSplit(shards.spec, train, load, "train"),
            "val": GroupedSplit(shards.spec, rest[to_val], rest_load, "val"),
            "test": GroupedSplit(shards.spec, rest[~to_val], rest_load, "test")}
