"""Shared plumbing for the real-world readers: one root (local or ``s3://``), its files, its splits.

Each reader (``celeba_hq``, ``utk_face``, ``spuco_animals``, ``waterbirds``, ``folder``) only knows its own
layout: it turns a :class:`DatasetRoot` into a table of (relative key, y, b[, split]) and hands it to
:func:`build_splits`, which checks the files are there, optionally decodes them all (``verify=True``),
splits reproducibly from the seed, and applies the bias ratio to train and val. Keys stay relative to
the root so a saved split table can be replayed against a copy of the data anywhere.
"""

from __future__ import annotations

import math
import posixpath
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
from PIL import Image

from ffr import options
from ffr.balance import VAL_FLOOR
from ffr.datasets.base import IMAGE_SOURCES, SPLITS, GroupedSplit, decode_image
from ffr.datasets.splitting import apply_bias_ratio, random_split
from ffr.errors import FFRError
from ffr.groups import REAL, GroupSpec
from ffr.storage import filesystem, is_remote

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# Spellings of split names found in the wild (WILDS uses 0/1/2, FFR "valid") → ours.
SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test",
                 "0": "train", "1": "val", "2": "test"}
# Up-front verification reads many small objects; on S3 latency dominates, so read several at once.
_VERIFY_THREADS = 16


class DatasetRoot:
    """A dataset directory on any filesystem; every path a reader asks for is relative to it."""

    def __init__(self, root: str, dataset: str) -> None:
        if not root:
            raise FFRError(f"{dataset}: option 'root' is empty; expected a local directory or an s3:// prefix")
        self.uri = str(root).rstrip("/") or "/"
        self.dataset = dataset
        self.fs, self.path = filesystem(self.uri)
        if not is_remote(self.uri):
            self.uri = self.path  # absolute: Ray workers run in another working directory
        if is_remote(self.uri):
            self.fs.invalidate_cache()  # s3fs caches listings; a dataset uploaded since must be seen
        if not self.fs.isdir(self.path):
            raise FFRError(f"{dataset}: root {self.uri!r} does not exist or is not a directory")

    def uri_of(self, rel: str) -> str:
        return f"{self.uri}/{rel}" if rel else self.uri

    def _inner(self, rel: str) -> str:
        return posixpath.join(self.path, rel) if rel else self.path

    def require_file(self, rel: str, what: str) -> str:
        if not self.fs.isfile(self._inner(rel)):
            raise FFRError(f"{self.dataset}: {what} {self.uri_of(rel)!r} does not exist")
        return rel

    def require_dir(self, rel: str, what: str) -> str:
        if not self.fs.isdir(self._inner(rel)):
            raise FFRError(f"{self.dataset}: {what} {self.uri_of(rel)!r} does not exist")
        return rel

    def read_bytes(self, rel: str, what: str) -> bytes:
        self.require_file(rel, what)
        with self.fs.open(self._inner(rel), "rb") as f:
            return f.read()

    def read_text(self, rel: str, what: str) -> str:
        data = self.read_bytes(rel, what)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise FFRError(f"{self.dataset}: {what} {self.uri_of(rel)!r} is not UTF-8 text") from None

    def list_files(self, rel: str = "", suffixes: tuple[str, ...] | None = IMAGE_SUFFIXES) -> list[str]:
        """Sorted keys (relative to the root) of every file below ``rel``, filtered by suffix."""
        base = self._inner(rel).rstrip("/")
        found = self.fs.find(base)
        root = self.path.rstrip("/")
        keys = []
        for p in found:
            p = str(p).replace("\\", "/")
            if not p.startswith(root + "/"):
                continue
            key = p[len(root) + 1:]
            if suffixes is None or key.lower().endswith(suffixes):
                keys.append(key)
        return sorted(keys)


@IMAGE_SOURCES.register("files")
class ImageLoader:
    """``key -> PIL.Image`` for one root; a plain picklable object so it travels to DataLoader/Ray workers."""

    def __init__(self, root_uri: str) -> None:
        self.root_uri = root_uri

    def to_plan(self, keys: list[str]) -> tuple[dict, None]:
        return {"kind": "files", "root": self.root_uri}, None

    @classmethod
    def from_plan(cls, description: dict, keys: list[str], columns) -> "ImageLoader":
        return cls(description["root"])

    def __call__(self, key: str) -> Image.Image:
        where = f"{self.root_uri}/{key}"
        fs, path = filesystem(where)
        try:
            with fs.open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise FFRError(f"image {where!r} does not exist") from None
        return decode_image(data, where)

    def __repr__(self) -> str:
        return f"ImageLoader({self.root_uri!r})"


class ReaderOptions(options.Options):
    """What every real-world reader takes; validated before any storage is touched."""

    root: str = options.PathField(description="the dataset's directory: a local path or an s3:// prefix")
    bias_ratio: float | None = options.Field(
        None, gt=0.5, lt=1.0, description="share of each class's majority bias kept in train and val (FFR's "
                                          "downsampling; null keeps the data as found)")
    seed: int = options.Field(0, ge=0, strict=True, description="seed of the split and of the downsampling")
    verify: bool = options.Field(False, description="decode every image up front instead of when it is read")


class FFRSplitOptions(ReaderOptions):
    """A reader that can also take FFR's published split files (ffr.datasets.ffr_splits)."""

    split_file: str | dict[str, str] | None = options.Field(
        None, description="FFR's split pickles (data/*.pkl of From-Fake-to-Real): a template with {split} and "
                          "{bias_ratio}, or {train, val, test} → path; paths remapped onto root; used as they are "
                          "(bias_ratio only picks the file)")


def check_present(root: DatasetRoot, keys: list[str], what: str = "image") -> None:
    """One listing of the root, then every listed key must be in it (a clear line for the first missing)."""
    present = set(root.list_files(suffixes=None))
    missing = [k for k in keys if k not in present]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise FFRError(f"{root.dataset}: {what} {root.uri_of(missing[0])!r} listed in the metadata does not "
                       f"exist{more}")


def verify_images(root: DatasetRoot, keys: list[str]) -> None:
    """Decode every image now rather than mid-training; names the first corrupt one and how many there are."""
    loader = ImageLoader(root.uri)

    def check(key: str) -> str | None:
        try:
            loader(key)
            return None
        except FFRError as e:
            return str(e)

    with ThreadPoolExecutor(_VERIFY_THREADS) as pool:
        errors = [e for e in pool.map(check, keys) if e]
    if errors:
        more = f" ({len(errors)} bad images in all)" if len(errors) > 1 else ""
        raise FFRError(f"{root.dataset}: {errors[0]}{more}")


def normalize_split_names(values: pd.Series, where: str) -> pd.Series:
    """Map 'train'/'valid'/0/1/2... onto train/val/test; anything else is one clear error."""
    as_text = values.astype(str).str.strip().str.lower()
    mapped = as_text.map(SPLIT_ALIASES)
    bad = as_text[mapped.isna()]
    if len(bad):
        raise FFRError(f"{where}: split value {bad.iloc[0]!r} is not one of train/val/test (or 0/1/2)")
    return mapped


def integer_column(table: pd.DataFrame, column: str, where: str) -> pd.Series:
    """A label column as int64; a non-integer value is one clear error naming it."""
    values = pd.to_numeric(table[column], errors="coerce")
    bad = table[column][values.isna() | (values != values.round())]
    if len(bad):
        raise FFRError(f"{where}: column {column!r} holds {bad.iloc[0]!r}; expected integers")
    return values.astype("int64")


def oppose_bias(table: pd.DataFrame, ratio: float, rng: np.random.Generator, floor: int = 0) -> pd.DataFrame:
    """FFR's forced-direction pre-downsampling for two classes × two biases (CelebA-HQ, UTK-Face).

    In the natural data both classes can share the same majority bias (most CelebA faces, smiling or not,
    are female), which would leave no spurious correlation to study. FFR therefore picks class 1's
    minority bias as its rarer one and gives class 0 the *other* bias as minority, then cuts each
    minority group to ``ceil(M * (1 - ratio) / ratio)`` of its class majority M (at least ``floor``).
    """
    y, b = table["y"].to_numpy(), table["b"].to_numpy()
    counts = {(cy, cb): int(np.sum((y == cy) & (b == cb))) for cy in (0, 1) for cb in (0, 1)}
    minority_of_1 = int(np.argmin([counts[(1, 0)], counts[(1, 1)]]))
    minority = {1: minority_of_1, 0: 1 - minority_of_1}
    drop: list[np.ndarray] = []
    for cy, mb in minority.items():
        keep = max(math.ceil(counts[(cy, 1 - mb)] * (1 - ratio) / ratio), floor)
        members = np.flatnonzero((y == cy) & (b == mb))
        if len(members) > keep:
            drop.append(rng.choice(members, len(members) - keep, replace=False))
    if not drop:
        return table
    return table.drop(index=table.index[np.concatenate(drop)])


def build_splits(root: DatasetRoot, table: pd.DataFrame, spec: GroupSpec, *, bias_ratio: float | None, seed: int,
                 verify: bool = False, check_files: bool = True, oppose_bias_ratio: float | None = None
                 ) -> dict[str, GroupedSplit]:
    """Rows (key, y, b[, split]) → the three :class:`GroupedSplit` objects, reproducibly from ``seed``.

    Without a ``split`` column the rows are sorted by key and split 80/10/10 by the seed (so the result
    does not depend on listing order). ``oppose_bias_ratio`` runs :func:`oppose_bias` on train and val
    first; then ``bias_ratio`` downsamples train (floor 0) and val (floor 10). Test is never touched.
    """
    if table.empty:
        raise FFRError(f"{root.dataset}: no usable images found under {root.uri!r}")
    table = table.sort_values("key", kind="stable").reset_index(drop=True)
    for column, names in (("y", spec.class_names), ("b", spec.bias_names)):
        values = table[column].to_numpy()
        bad = values[(values < 0) | (values >= len(names))]
        if len(bad):
            raise FFRError(f"{root.dataset}: {column} value {int(bad[0])} is out of range; expected 0..{len(names) - 1}"
                           f" for names {list(names)}")
    if "split" not in table.columns:
        table["split"] = random_split(len(table), seed)
    keys = table["key"].astype(str).tolist()
    if check_files:
        check_present(root, keys)
    if verify:
        verify_images(root, keys)
    table["source"] = REAL
    loader = ImageLoader(root.uri)
    rng = np.random.default_rng([seed, 1])  # its own stream: changing split code never shifts which rows drop
    splits: dict[str, GroupedSplit] = {}
    for name in SPLITS:
        part = table[table["split"] == name].drop(columns="split")
        if part.empty:
            raise FFRError(f"{root.dataset}: split {name!r} is empty under {root.uri!r}; expected images in every "
                           "split")
        if oppose_bias_ratio is not None and name != "test":
            part = oppose_bias(part, oppose_bias_ratio, rng, floor=VAL_FLOOR if name == "val" else 0)
        splits[name] = GroupedSplit(spec, part.reset_index(drop=True), loader, name)
    return apply_bias_ratio(splits, bias_ratio, seed)

