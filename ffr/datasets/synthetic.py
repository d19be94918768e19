"""``synthetic``: a generation output root (local or ``s3://``) as grouped data with ``source = 1``.

Reads the shard contract of :mod:`ffr.shards` (only complete shards, accepted images). Synthetic data
trains only, so ``train`` holds the selected images and ``val``/``test`` are empty. ``counts`` picks a
seeded, deterministic subset per (class, bias) group; too few images for a group is a clear error.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ffr.datasets.base import DATASETS, IMAGE_SOURCES, GroupedSplit, decode_image
from ffr.datasets.splitting import random_split
from ffr.errors import FFRError
from ffr.groups import SYNTHETIC
from ffr.review.views import filter_reviewed
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


def _parse_counts(counts) -> dict[tuple[int, int], int] | None:
    """Accepts {(y, b): n} or YAML-friendly {"y,b": n} / {"y_b": n}."""
    if counts is None:
        return None
    out = {}
    for key, n in dict(counts).items():
        if isinstance(key, str):
            parts = key.replace("_", ",").split(",")
            if len(parts) != 2:
                raise FFRError(f"synthetic counts key {key!r} is not 'y,b'")
            key = (int(parts[0]), int(parts[1]))
        out[(int(key[0]), int(key[1]))] = int(n)
    return out


@IMAGE_SOURCES.register("shards")
class ShardImages:
    """image key → PIL image from the shards, each one ranged read at its known tar offset (a plain picklable
    object, for DataLoader workers). Built from a :class:`ShardReader` on the driver, or from a run plan."""

    def __init__(self, root: str, members: dict[str, tuple[str, int, int]]) -> None:
        self.root, self.members = root, members  # key → (tar path relative to root, offset, size)

    @classmethod
    def of(cls, reader: ShardReader) -> "ShardImages":
        return cls(reader.root, {key: reader.member(key) for key in reader.metadata["image_key"].astype(str)})

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
        fs, base = filesystem(self.root)
        # One ranged read (an HTTP Range GET on S3), not a buffered open that would fetch a whole block.
        data = fs.cat_file(join(base, tar), start=offset, end=offset + size)
        return decode_image(data, f"{self.root}:{key}")


@DATASETS.register("synthetic")
def synthetic(root: str, bias_ratio: float | None = None, seed: int = 0, counts: dict | None = None,
              fractions: tuple[float, float, float] | None = None, review: str | None = None
              ) -> dict[str, GroupedSplit]:
    """All accepted images under ``root`` (or ``counts`` per group) as ``train``; ``bias_ratio`` does not
    apply and is ignored. ``fractions`` (e.g. 0.8, 0.1, 0.1) splits them seeded instead, to measure
    accuracy on held-out synthetic images. ``review="accepted"`` keeps only the ids that human review
    accepted (``ffr review export``), before any selection."""
    reader = ShardReader(root)
    meta = reader.metadata
    table = pd.DataFrame({"key": meta["image_key"].astype(str), "y": meta["y"].astype(np.int64),
                          "b": meta["b"].astype(np.int64), "source": SYNTHETIC, "id": meta["id"].astype(str)})
    # Shards finish in any order; sort by id so a selection depends on the images, not on shard timing.
    table = table.sort_values("id", kind="stable").reset_index(drop=True)
    table = filter_reviewed(table, root, review).reset_index(drop=True)

    load_image = ShardImages.of(reader)
    wanted = _parse_counts(counts)
    if wanted is not None:
        table = table.iloc[select_per_group(table["y"].to_numpy(), table["b"].to_numpy(), wanted, seed,
                                            f"synthetic set {root!r}")]
    if fractions is None:
        parts = {"train": table, "val": table.iloc[:0], "test": table.iloc[:0]}
    else:
        split_of = random_split(len(table), seed, tuple(fractions))
        parts = {name: table[split_of == name] for name in ("train", "val", "test")}
    return {name: GroupedSplit(reader.spec, part, load_image, name) for name, part in parts.items()}
