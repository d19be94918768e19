"""``d3s-shift``: a D3S output's correlated / anti-correlated split views (:mod:`ffr.datasets.d3s_splits`)
as grouped data.

Class = super-class (ImageNet-9 by default), bias = background, so a group is (super-class, background) and
worst-group accuracy means what D3S's experiment measures. As D3S ran it (``validation: correlated``, the
default): ``train`` is the correlated view (each super-class on its one assigned background), ``val`` the
correlated view of held-out images and ``test`` the anti-correlated view of held-out images (every other
background), so model selection never sees the test distribution. Held-out images are those of a second
output ``val_root`` (D3S's val set, with a view of the same name and assignment), or, without one, a share
``held_out_fraction`` of ``root`` chosen by a hash of (seed, image id) (:func:`~ffr.datasets.d3s_splits.held_out`,
the rule of the ``d3s`` reader and of ``ffr d3s correlation``).

``validation: anti-correlated`` keeps the earlier protocol for comparison: train on the whole correlated view,
``val`` and ``test`` two halves (``val_fraction``) of the anti-correlated view — selection then sees the test
distribution. Images are read from the shards the views point into.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from ffr.datasets.base import GroupedSplit, ReferenceCounts, reader
from ffr.datasets.synthetic import ShardImages
from ffr.errors import FFRError
from ffr.groups import SYNTHETIC, GroupSpec
from ffr.options import Field, Options, PathField
from ffr.shards import ShardReader


def _table(view: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"key": view["image_key"].astype(str), "y": view["superclass"].astype(np.int64),
                         "b": view["b"].astype(np.int64), "source": SYNTHETIC, "id": view["id"].astype(str)})


class D3SShiftOptions(Options):
    root: str = PathField(description="a D3S generation output (local or s3://)")
    split: str = Field(description="the split views' name under root/splits/ (ffr d3s splits --name)")
    validation: Literal["correlated", "anti-correlated"] = Field(
        "correlated", description="correlated: val = held-out correlated images, test = held-out anti-correlated "
                                  "(D3S); anti-correlated: val and test = halves of the anti-correlated view")
    val_root: str | None = PathField(None, description="a second D3S output holding the held-out images (with a view "
                                                   "of the same name and assignment)")
    held_out_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="without val_root: the share of root held "
                                                                       "out (by a hash of seed and image id)")
    bias_ratio: float | None = Field(None, description="ignored: the views fix the correlation")
    seed: int = Field(0, ge=0, strict=True, description="seed of the held-out share (or of the val/test halves)")
    val_fraction: float = Field(0.5, gt=0.0, lt=1.0, description="validation anti-correlated only: share of the "
                                                                 "anti-correlated view going to val")
    review: Literal["accepted"] | None = Field(None, description="'accepted': only images human review accepted")


D3S_PER_CELL = 12  # configs/generate-d3s-background.yaml: 1000 classes × 10 backgrounds × 12 = 120K


def recipe_data(name: str):
    """A data file shipped with the D3S recipes (pipelines/recipes/data/), read by path, not imported: datasets
    sit below generation."""
    import pathlib

    return pathlib.Path(__file__).resolve().parents[2] / "pipelines" / "recipes" / "data" / name


def background_labels() -> tuple[str, ...]:
    """The D3S background labels, from the recipe's word list."""
    from ffr.config import load_yaml

    path = recipe_data("d3s_shifts.yaml")
    try:
        return tuple(load_yaml(path.read_text())["background"]["values"])
    except (OSError, KeyError, TypeError):
        return tuple(f"background {i}" for i in range(10))


def _reference(options: D3SShiftOptions) -> ReferenceCounts | None:
    """The views ``ffr d3s splits`` makes of the shipped 120K D3S config (12 images per class × background),
    for ImageNet-9 split names ``imagenet9-seed<N>`` (a seeded draw) and ``imagenet9-<a0>-...-<a8>`` (an explicit
    ``--assignment``, e.g. D3S's ``imagenet9-2-8-4-9-1-6-7-3-0``)."""
    import re

    from ffr.datasets.d3s_splits import assign_backgrounds, load_mapping

    seeded = re.fullmatch(r"imagenet9-(d3s-)?seed(\d+)", options.split)
    explicit = re.fullmatch(r"imagenet9((?:-\d+)+)", options.split)
    if seeded is None and explicit is None:
        return None
    mapping, labels = load_mapping(), background_labels()
    per_superclass = np.bincount(list(mapping["classes"].values()), minlength=len(mapping["names"])) * D3S_PER_CELL
    if seeded is not None:
        assigned = assign_backgrounds(len(mapping["names"]), len(labels), int(seeded[2]),
                                      "d3s" if seeded[1] else "ffr")
    else:
        assigned = [int(a) for a in explicit[1].strip("-").split("-")]
        if len(assigned) != len(mapping["names"]) or not all(0 <= a < len(labels) for a in assigned):
            return None
    unused = set(range(len(labels))) - {int(a) for a in assigned}
    correlated = {(s, int(a)): int(per_superclass[s]) for s, a in enumerate(assigned)}
    anti = {(s, b): int(per_superclass[s]) for s in range(len(assigned)) for b in range(len(labels))
            if b != assigned[s] and b not in unused}
    if options.validation == "anti-correlated":
        splits = {"train": correlated, "val": {g: round(n * options.val_fraction) for g, n in anti.items()},
                  "test": {g: n - round(n * options.val_fraction) for g, n in anti.items()}}
    elif options.val_root is None:  # the held-out share of the one output, in expectation
        share = options.held_out_fraction
        splits = {"train": {g: n - round(n * share) for g, n in correlated.items()},
                  "val": {g: round(n * share) for g, n in correlated.items()},
                  "test": {g: round(n * share) for g, n in anti.items()}}
    else:
        return None  # val and test come from another output, of a size the config does not say
    return ReferenceCounts(
        f"the views of configs/generate-d3s-background.yaml's 120K images ({D3S_PER_CELL} per class × background, "
        "ImageNet-9's 370 classes), split by `ffr d3s splits`", GroupSpec(tuple(mapping["names"]), labels),
        splits, pixels=512 * 512)


def load_views(root: str, split: str, review: str | None) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(correlated, anti-correlated, record) of one output, restricted to accepted images when asked."""
    from ffr.datasets.d3s_splits import read_view

    correlated, record = read_view(root, split, "correlated")
    anti, _ = read_view(root, split, "anti-correlated")
    if review == "accepted":
        from ffr.datasets.reviewed import accepted_ids

        keep = accepted_ids(root)
        correlated, anti = (v[v["id"].astype(str).isin(keep)] for v in (correlated, anti))
    return correlated, anti, record


def held_out_views(root: str, split: str, val_root: str | None, held_out_fraction: float, seed: int,
                   review: str | None = None) -> tuple[dict[str, pd.DataFrame], dict, dict[str, str]]:
    """D3S's three sets as views: ``train`` (correlated, not held out), ``val`` (correlated, held out) and ``test``
    (anti-correlated, held out); the record, and the output each set's images live in."""
    from ffr.datasets.d3s_splits import held_out

    correlated, anti, record = load_views(root, split, review)
    if val_root is None:
        out_c = held_out(correlated["id"], seed, held_out_fraction)
        out_a = held_out(anti["id"], seed, held_out_fraction)
        views = {"train": correlated[~out_c], "val": correlated[out_c], "test": anti[out_a]}
        return views, record, {"train": root, "val": root, "test": root}
    val_correlated, val_anti, val_record = load_views(val_root, split, review)
    if val_record["assigned_background"] != record["assigned_background"]:
        raise FFRError(f"d3s-shift: view {split!r} of val_root {val_root!r} assigns {val_record['assigned_background']}"
                       f"; expected root's {record['assigned_background']} (run ffr d3s splits with one assignment)")
    return ({"train": correlated, "val": val_correlated, "test": val_anti}, record,
            {"train": root, "val": val_root, "test": val_root})


@reader("d3s-shift", D3SShiftOptions, reference=_reference)
def d3s_shift(options: D3SShiftOptions) -> dict[str, GroupedSplit]:
    """Views ``split`` (a name under ``root/splits/``) of the D3S output ``root`` (and ``val_root``)."""
    root, seed = options.root, options.seed
    if options.validation == "anti-correlated":
        correlated, anti, record = load_views(root, options.split, options.review)
        anti_table = _table(anti)
        to_val = np.random.default_rng([int(seed), 5]).random(len(anti_table)) < float(options.val_fraction)
        tables = {"train": _table(correlated), "val": anti_table[to_val], "test": anti_table[~to_val]}
        where = {name: root for name in tables}
    else:
        views, record, where = held_out_views(root, options.split, options.val_root, options.held_out_fraction, seed,
                                              options.review)
        tables = {name: _table(view) for name, view in views.items()}
    readers = {uri: ShardReader(uri) for uri in set(where.values())}
    loaders = {uri: ShardImages.of(shards) for uri, shards in readers.items()}
    spec = GroupSpec(tuple(record["superclasses"]), readers[root].spec.bias_names)
    return {name: GroupedSplit(spec, table, loaders[where[name]], name) for name, table in tables.items()}
