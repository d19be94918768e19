"""A class table: index, wnid (the folder name of the class in an ImageNet-layout root), name, definition.

The shipped ``data/imagenet_classes.tsv`` holds the 1000 ImageNet-1k classes (built by
``scripts/build_imagenet_classes.py`` from D3S's public metadata); any other tab-separated file with the same
header works too (the embedded D3S uses ``data/digit_classes.tsv``). Indices are the model's label space:
evaluation compares a classifier's top-1 index with ``index``.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import lru_cache

from ffr.errors import FFRError
from ffr.storage import filesystem

COLUMNS = ("index", "wnid", "name", "definition")
IMAGENET = "imagenet"  # the shipped ImageNet-1k table


@dataclass(frozen=True)
class ClassTable:
    wnids: tuple[str, ...]
    names: tuple[str, ...]
    definitions: tuple[str, ...]
    source: str

    def __len__(self) -> int:
        return len(self.names)


def _text(source: str) -> str:
    if source == IMAGENET or source.startswith("data/"):
        from importlib import resources

        leaf = "imagenet_classes.tsv" if source == IMAGENET else source[len("data/"):]
        return resources.files("pipelines.recipes").joinpath("data", leaf).read_text()
    fs, inner = filesystem(source)
    if not fs.exists(inner):
        raise FFRError(f"class table {source!r} does not exist; expected a TSV with columns {', '.join(COLUMNS)}")
    return fs.cat_file(inner).decode()


@lru_cache(maxsize=8)
def load_class_table(source: str = IMAGENET) -> ClassTable:
    """The table at ``source`` ('imagenet', 'data/<shipped file>', a path or URI); rows must be 0..n-1 in order."""
    rows = list(csv.DictReader(io.StringIO(_text(source)), delimiter="\t"))
    if not rows or tuple(rows[0].keys())[:4] != COLUMNS:
        raise FFRError(f"class table {source!r} has columns {list(rows[0].keys()) if rows else []}; "
                       f"expected {list(COLUMNS)}")
    if [r["index"] for r in rows] != [str(i) for i in range(len(rows))]:
        raise FFRError(f"class table {source!r}: column 'index' must run 0..{len(rows) - 1} in order")
    wnids = tuple(r["wnid"] for r in rows)
    if len(set(wnids)) != len(wnids):
        raise FFRError(f"class table {source!r}: column 'wnid' holds duplicates")
    return ClassTable(wnids, tuple(r["name"] for r in rows), tuple(r["definition"] for r in rows), source)
