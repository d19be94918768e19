"""``class-folder``: an ImageNet-layout folder (``root/{wnid}/*.JPEG``), local or ``s3://``, as class-labelled data.

The real stream of D3S's disentanglement training (32 ImageNet-train images beside 32 D3S images per step):
images with a class label and no background label. Every image gets bias 0 (one bias, ``unlabelled``), so the
data fits the grouped-split contract; a method that mixes it into its batches (``mix`` in the training config)
treats it as class-only.

The class index is the model's label space. By default it is the folder's position among the sorted folder
names — ImageNet's own order (torchvision's ImageFolder does the same). A root holding only some classes needs
``classes``: the folder names in index order, or a class table (``.tsv`` with a ``wnid`` column, and ``name`` for
class names: the format of ``pipelines/recipes/data/imagenet_classes.tsv``), so its indices stay the full
table's. ``val_root`` (e.g. ImageNet's ``val/`` sorted into class folders) gives val and test, split in halves
by the seed; without it, ``fractions`` splits ``root`` (default: everything is train).
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from ffr.datasets.base import GroupedSplit, reader
from ffr.datasets.readers import DatasetRoot, ImageLoader
from ffr.datasets.splitting import random_split
from ffr.errors import FFRError
from ffr.groups import REAL, GroupSpec
from ffr.options import Field, Options, PathField
from ffr.storage import filesystem

UNLABELLED = "unlabelled"  # the one bias name: these images carry no bias (background) label


class ClassFolderOptions(Options):
    root: str = PathField(description="an ImageNet-layout folder, root/{class folder}/*.jpg (local or s3://)")
    classes: list[str] | str | None = Field(
        None, description="class folder names in index order, or a class table (.tsv with columns wnid[, name]); "
                          "default: the sorted folder names")
    val_root: str | None = PathField(None, description="another class folder for val and test (halves, by the seed)")
    fractions: tuple[float, float, float] = Field((1.0, 0.0, 0.0),
                                                  description="train/val/test shares of root without val_root")
    seed: int = Field(0, ge=0, strict=True, description="seed of the val/test split")
    bias_ratio: float | None = Field(None, description="ignored: the images carry no bias label")


def _class_table(source: str) -> tuple[list[str], list[str] | None]:
    fs, inner = filesystem(source)
    if not fs.isfile(inner):
        raise FFRError(f"class-folder: class table {source!r} does not exist; expected a .tsv with a 'wnid' column")
    try:
        table = pd.read_csv(io.BytesIO(fs.cat_file(inner)), sep="\t", dtype=str, keep_default_na=False)
    except Exception as e:  # pandas raises several types for unreadable files
        raise FFRError(f"class-folder: class table {source!r} cannot be read ({type(e).__name__})") from None
    if "wnid" not in table.columns:
        raise FFRError(f"class-folder: class table {source!r} has columns {list(table.columns)}; expected 'wnid'")
    return table["wnid"].tolist(), table["name"].tolist() if "name" in table.columns else None


def _images(data: DatasetRoot) -> list[str]:
    """Keys of the images one folder level down (one listing of the root)."""
    keys = [key for key in data.list_files() if "/" in key]
    if not keys:
        raise FFRError(f"class-folder: no images in class folders under {data.uri!r}; expected root/<class>/*.jpg")
    return keys


def _table(data: DatasetRoot, keys: list[str], index: dict[str, int]) -> pd.DataFrame:
    rows = [(key, index[key.split("/", 1)[0]]) for key in keys if key.split("/", 1)[0] in index]
    if not rows:
        raise FFRError(f"class-folder: no image of the {len(index)} classes under {data.uri!r}")
    return pd.DataFrame({"key": [k for k, _ in rows], "y": np.asarray([y for _, y in rows], np.int64),
                         "b": 0, "source": REAL})


@reader("class-folder", ClassFolderOptions)
def class_folder(options: ClassFolderOptions) -> dict[str, GroupedSplit]:
    data = DatasetRoot(options.root, "class-folder")
    names: list[str] | None = None
    keys = _images(data)
    if options.classes is None:
        wnids = sorted({key.split("/", 1)[0] for key in keys})
    elif isinstance(options.classes, str):
        wnids, names = _class_table(options.classes)
    else:
        wnids = [str(c) for c in options.classes]
    if len(set(wnids)) != len(wnids) or len(wnids) < 2:
        raise FFRError(f"class-folder: classes {wnids[:5]}... must be at least 2 distinct folder names")
    index = {w: i for i, w in enumerate(wnids)}
    spec = GroupSpec(tuple(names or wnids), (UNLABELLED,))
    train = _table(data, keys, index)
    loader = ImageLoader(data.uri)
    if options.val_root is not None:
        held = DatasetRoot(options.val_root, "class-folder")
        rest = _table(held, _images(held), index)
        to_val = np.random.default_rng([options.seed, 5]).random(len(rest)) < 0.5
        other = ImageLoader(held.uri)
        return {"train": GroupedSplit(spec, train, loader, "train"),
                "val": GroupedSplit(spec, rest[to_val], other, "val"),
                "test": GroupedSplit(spec, rest[~to_val], other, "test")}
    train = train.sort_values("key", kind="stable").reset_index(drop=True)
    split_of = random_split(len(train), options.seed, tuple(options.fractions))
    return {name: GroupedSplit(spec, train[split_of == name], loader, name) for name in ("train", "val", "test")}
