"""``synthetic``: a generation output root (local or ``s3://``) as grouped data with ``source = 1``.

Reads the shard contract of :mod:`ffr.shards` (only complete shards, accepted images). Synthetic data
trains only, so ``train`` holds the selected images and ``val``/``test`` are empty. ``counts`` picks a
seeded, deterministic subset per (class, bias) group; too few images for a group is a clear error.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from ffr.datasets.base import IMAGE_SOURCES, GroupedSplit, decode_image, reader
from ffr.datasets.reviewed import filter_reviewed
from ffr.datasets.splitting import random_split
from ffr.errors import FFRError
from ffr.groups import SYNTHETIC
from ffr.options import Field, Options, PathField, group_keyed
from ffr.shards import ShardReader
from ffr.storage import filesystem, join


def select_per_group(y: np.ndarray, b: np.ndarray, counts: dict[tuple[int, int], int], seed: int,
                     where: str = "the synthetic set") -> np.ndarray:
    """Sorted indices holding exactly ``counts[(y, b)]`` examples of each group, chosen by ``seed``."""
    rng = np.random.default_rng([seed, 2])
    chosen = []
    for (gy, gb), n in sorted(counts.items()):
        members = np.flatnonzero((y == gy) & (b == gb))
        if n > len(members):
            raise FFRError(f"{where} has {len(members)} images of group (y={gy}, b={gb}) but {n} are needed; "
                           "generate more images for that group")
        if n > 0:
            chosen.append(np.sort(rng.choice(members, int(n), replace=False)))
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def generator_labels(meta: pd.DataFrame, root: str) -> np.ndarray:
    """Each image's generator label (backend, model and what changes the images: the ``generator`` column every
    record carries). Outputs written before the column existed are named from their recorded identity (backend
    and model), so runs on them still group by generator."""
    labels = meta["generator"] if "generator" in meta.columns else pd.Series([None] * len(meta), index=meta.index)
    if labels.notna().all():
        return labels.astype(str).to_numpy()
    fs, base = filesystem(root)
    path = join(base, "manifest", "manifest.json")
    identity = json.loads(fs.cat_file(path)).get("identity", {}) if fs.exists(path) else {}
    name = str(identity.get("backend.name") or "unknown")
    model = identity.get("backend.settings.model")
    fallback = f"{name}:{str(model).rstrip('/').rsplit('/', 1)[-1]}" if model else name
    return labels.fillna(fallback).astype(str).to_numpy()


@IMAGE_SOURCES.register("shards")
class ShardImages:
    """image key → PIL image from the shards, each one ranged read at its known tar offset (a plain picklable
    object, for DataLoader workers). Built from a :class:`ShardReader` on the driver, or from a run plan."""

    def __init__(self, root: str, members: dict[str, tuple[str, int, int]]) -> None:
        self.root, self.members = root, members  # key → (tar: local path or URI, offset, size)

    @classmethod
    def of(cls, reader: ShardReader) -> "ShardImages":
        found = reader.members()
        return cls(reader.root, {k: (path, int(o), int(n)) for k, path, o, n in
                                 zip(found["image_key"], found["path"], found["offset"], found["size"])})

    def to_plan(self, keys: list[str]) -> tuple[dict, dict[str, list]]:
        where = [self._member(k) for k in keys]
        return {"kind": "shards", "root": self.root}, {"tar": [w[0] for w in where], "offset": [w[1] for w in where],
                                                       "size": [w[2] for w in where]}

    @classmethod
    def from_plan(cls, description: dict, keys: list[str], columns: pd.DataFrame) -> "ShardImages":
        members = zip(columns["tar"].astype(str), columns["offset"].astype("int64"), columns["size"].astype("int64"))
        return cls(description["root"], {k: (tar, int(o), int(n)) for k, (tar, o, n) in zip(keys, members)})

    def _member(self, key: str) -> tuple[str, int, int]:
        try:
            return self.members[key]
        except KeyError:
            raise FFRError(f"synthetic image {key!r} is not in the shards under {self.root!r}") from None

    def __call__(self, key: str):
        tar, offset, size = self._member(key)
        fs, path = filesystem(tar)
        # One ranged read (an HTTP Range GET on S3), not a buffered open that would fetch a whole block.
        return decode_image(fs.cat_file(path, start=offset, end=offset + size), f"{self.root}:{key}")


class SyntheticOptions(Options):
    root: str = PathField(description="a generation output (local or s3://)")
    bias_ratio: float | None = Field(None, description="ignored: synthetic data is selected per group")
    seed: int = Field(0, ge=0, strict=True, description="seed of the per-group selection and of the split")
    counts: dict[str | tuple[int, int], int] | None = Field(
        None, description="images per group, keyed 'y,b' (default: every accepted image)")
    fractions: tuple[float, float, float] | None = Field(
        None, description="train/val/test shares to split the images seeded (default: all train)")
    review: str | None = Field(None, description="'accepted': only the ids human review accepted (ffr review "
                                                 "export), before any selection")


@reader("synthetic", SyntheticOptions)
def synthetic(options: SyntheticOptions) -> dict[str, GroupedSplit]:
    """All accepted images under ``root`` (or ``counts`` per group) as ``train``; ``fractions`` (e.g. 0.8, 0.1,
    0.1) splits them seeded instead, to measure accuracy on held-out synthetic images."""
    root, seed, fractions = options.root, options.seed, options.fractions
    shards = ShardReader(root)
    meta = shards.metadata
    table = pd.DataFrame({"key": meta["image_key"].astype(str), "y": meta["y"].astype(np.int64),
                          "b": meta["b"].astype(np.int64), "source": SYNTHETIC, "id": meta["id"].astype(str),
                          "generator": generator_labels(meta, root)})
    # Shards finish in any order; sort by id so a selection depends on the images, not on shard timing.
    table = table.sort_values("id", kind="stable").reset_index(drop=True)
    table = filter_reviewed(table, root, options.review).reset_index(drop=True)

    load_image = ShardImages.of(shards)
    wanted = None if options.counts is None else {
        g: int(n) for g, n in group_keyed(options.counts, "dataset_options.counts").items()}
    if wanted is not None:
        table = table.iloc[select_per_group(table["y"].to_numpy(), table["b"].to_numpy(), wanted, seed,
                                            f"synthetic set {root!r}")]
    if fractions is None:
        parts = {"train": table, "val": table.iloc[:0], "test": table.iloc[:0]}
    else:
        split_of = random_split(len(table), seed, tuple(fractions))
        parts = {name: table[split_of == name] for name in ("train", "val", "test")}
    return {name: GroupedSplit(shards.spec, part, load_image, name) for name, part in parts.items()}
