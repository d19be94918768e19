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

from ffr.datasets.base import GroupedSplit, ReferenceCounts, reader
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


D3S_PER_CELL = 12  # configs/generate-d3s-background.yaml: 1000 classes × 10 backgrounds × 12 = 120K


def _background_labels() -> tuple[str, ...]:
    """The D3S background labels, from the recipe's word list (a data file of the pipelines package, read, not
    imported: datasets sit below generation)."""
    import pathlib

    from ffr.config import load_yaml

    path = pathlib.Path(__file__).resolve().parents[2] / "pipelines" / "recipes" / "data" / "d3s_shifts.yaml"
    try:
        return tuple(load_yaml(path.read_text())["background"]["values"])
    except (OSError, KeyError, TypeError):
        return tuple(f"background {i}" for i in range(10))


def _reference(options: D3SShiftOptions) -> ReferenceCounts | None:
    """The views ``ffr d3s splits`` makes of the shipped 120K D3S config (12 images per class × background),
    for ImageNet-9 split names ``imagenet9-seed<N>``."""
    import re

    from ffr.datasets.d3s_splits import assign_backgrounds, load_mapping

    match = re.fullmatch(r"imagenet9-seed(\d+)", options.split)
    if match is None:
        return None
    mapping, labels = load_mapping(), _background_labels()
    per_superclass = np.bincount(list(mapping["classes"].values()), minlength=len(mapping["names"])) * D3S_PER_CELL
    assigned = assign_backgrounds(len(mapping["names"]), len(labels), int(match[1]))
    unused = set(range(len(labels))) - {int(a) for a in assigned}
    train = {(s, int(a)): int(per_superclass[s]) for s, a in enumerate(assigned)}
    anti = {(s, b): int(per_superclass[s]) for s in range(len(assigned)) for b in range(len(labels))
            if b != assigned[s] and b not in unused}
    return ReferenceCounts(
        f"the views of configs/generate-d3s-background.yaml's 120K images ({D3S_PER_CELL} per class × background, "
        "ImageNet-9's 370 classes), split by `ffr d3s splits`", GroupSpec(tuple(mapping["names"]), labels),
        {"train": train, "val": {g: round(n * options.val_fraction) for g, n in anti.items()},
         "test": {g: n - round(n * options.val_fraction) for g, n in anti.items()}}, pixels=512 * 512)


@reader("d3s-shift", D3SShiftOptions, reference=_reference)
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
