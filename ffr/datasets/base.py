"""The contract every dataset follows (one registry, ``ffr.datasets.create(name, **options)``).

A dataset reader turns a root (local path or ``s3://``) into three :class:`GroupedSplit` objects. Each
split is a table with one row per example — ``key`` (a path *relative to the root*, or a shard image
key), ``y``, ``b``, ``source`` (0 real, 1 synthetic) — plus the :class:`GroupSpec` with class and bias
names and a ``load_image(key) -> PIL.Image`` function. Nothing here imports Ray or touches the GPU.

Splits are computed reproducibly from a seed and saved as a small Parquet next to a run
(:func:`save_splits`), relative keys only, so a run can be repeated anywhere.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from PIL import Image

from ffr.errors import FFRError
from ffr.groups import GroupSpec
from ffr.options import Options
from ffr.registry import Registry

SPLITS = ("train", "val", "test")
DATASETS: Registry = Registry("dataset", plugins="ffr.datasets")
# Image loaders (a split's ``load_image``) by kind. The driver writes each loader into the run's plan
# (ffr.training.plan) as ``loader.to_plan(keys) -> (description, per-key columns or None)``, and workers rebuild
# it with ``IMAGE_SOURCES.get(description["kind"]).from_plan(description, keys, columns)`` - no listing, no
# indexing. A new kind of loader registers here.
IMAGE_SOURCES: Registry = Registry("image source")


@dataclass(frozen=True)
class ReferenceCounts:
    """A dataset's published split sizes per (y, b) group, before the config's bias ratio, and its typical image
    size: what cost previews (``ffr train --dry-run``) count with when they read no data. ``source`` says where the
    numbers come from."""

    source: str
    spec: GroupSpec
    splits: dict[str, dict[tuple[int, int], int]]
    pixels: int  # width × height of a typical stored image

    def at_bias_ratio(self, bias_ratio: float | None) -> dict[str, dict[tuple[int, int], int]]:
        """The counts training sees: FFR's rule at ``bias_ratio`` (train floor 0, val floor 10, test untouched)."""
        from ffr.balance import VAL_FLOOR, keep_counts

        if bias_ratio is None:
            return {k: dict(v) for k, v in self.splits.items()}
        return {name: dict(counts) if name == "test" else
                keep_counts(counts, bias_ratio, VAL_FLOOR if name == "val" else 0)
                for name, counts in self.splits.items()}


def reader(name: str, options: type[Options], reference: Callable[[Options], ReferenceCounts | None] | None = None
           ) -> Callable:
    """Register dataset reader ``fn(options) -> {split: GroupedSplit}`` under ``name``; ``options`` is its
    :class:`ffr.options.Options` model, which ``ffr.datasets.create`` validates (and ``--show-config`` prints).
    ``reference(options)``: the dataset's :class:`ReferenceCounts` for those options (None when unknown)."""

    def decorator(fn: Callable) -> Callable:
        fn.Options = options
        fn.reference = reference
        return DATASETS.register(name)(fn)

    return decorator


@dataclass
class GroupedSplit:
    spec: GroupSpec
    table: pd.DataFrame  # columns: key, y, b, source (+ anything else a reader wants to keep)
    load_image: Callable[[str], Image.Image] = field(repr=False)
    name: str = "train"

    def __post_init__(self) -> None:
        missing = {"key", "y", "b", "source"} - set(self.table.columns)
        if missing:
            raise FFRError(f"split {self.name!r} table lacks columns {sorted(missing)}")
        self.table = self.table.reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.table)

    @property
    def y(self) -> np.ndarray:
        return self.table["y"].to_numpy(np.int64)

    @property
    def b(self) -> np.ndarray:
        return self.table["b"].to_numpy(np.int64)

    @property
    def source(self) -> np.ndarray:
        return self.table["source"].to_numpy(np.int64)

    def groups(self, spec: GroupSpec | None = None) -> np.ndarray:
        """Group ids under ``spec`` (default: this split's own spec; pass ``spec.with_sources()`` for USB/ASB)."""
        spec = spec or self.spec
        return np.asarray(spec.group_id(self.y, self.b, self.source if spec.with_source else None), dtype=np.int64)

    def subset(self, indices: np.ndarray, name: str | None = None) -> "GroupedSplit":
        return GroupedSplit(self.spec, self.table.iloc[np.asarray(indices)], self.load_image, name or self.name)

    @staticmethod
    def concat(parts: list["GroupedSplit"], name: str) -> "GroupedSplit":
        """Concatenate splits (e.g. real + synthetic); keys become 'part\0key' so each row keeps its loader."""
        tables, loaders = [], []
        for i, p in enumerate(parts):
            t = p.table.copy()
            t["_part"] = i
            tables.append(t)
            loaders.append(p.load_image)
        table = pd.concat(tables, ignore_index=True)
        table["key"] = table["_part"].astype(str) + "\0" + table["key"].astype(str)
        return GroupedSplit(parts[0].spec, table.drop(columns="_part"), PartLoader(loaders), name)


class PartLoader:
    """'part\0key' → the part's own loader; a class, not a closure, so DataLoader workers can pickle it."""

    def __init__(self, loaders: list[Callable[[str], Image.Image]]) -> None:
        self.loaders = loaders

    def __call__(self, key: str) -> Image.Image:
        part, _, inner = key.partition("\0")
        return self.loaders[int(part)](inner)


class GroupedImageDataset(torch.utils.data.Dataset):
    """torch Dataset over a split: returns (image tensor, y, b, source, group, index)."""

    def __init__(self, split: GroupedSplit, transform: Callable, group_spec: GroupSpec | None = None) -> None:
        self.split, self.transform = split, transform
        self.keys = split.table["key"].astype(str).tolist()
        self.y, self.b, self.source = split.y, split.b, split.source
        self.groups = split.groups(group_spec)

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int):
        image = self.split.load_image(self.keys[i]).convert("RGB")
        return self.transform(image), int(self.y[i]), int(self.b[i]), int(self.source[i]), int(self.groups[i]), i


def decode_image(data: bytes, where: str) -> Image.Image:
    """Bytes → PIL image; a corrupt file is one clear error line naming it."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        return image
    except Exception as e:  # PIL raises several types for corrupt data
        raise FFRError(f"image {where!r} cannot be decoded ({type(e).__name__}); "
                       "the file is corrupt or not an image") from None


def save_splits(splits: dict[str, GroupedSplit], path: str) -> None:
    """One small Parquet with every split's rows (relative keys only) and a ``split`` column."""
    from ffr.storage import filesystem

    frames = [s.table.assign(split=name) for name, s in splits.items()]
    fs, inner = filesystem(path)
    with fs.open(inner, "wb") as f:
        pd.concat(frames, ignore_index=True).to_parquet(f, index=False)

