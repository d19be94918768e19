"""Any image folder plus a table of labels: the way to bring your own grouped dataset.

``root/metadata.csv`` (or ``.parquet``; another name or an absolute/``s3://`` location via ``metadata=``)
has columns ``path`` (relative to ``root``), ``y`` and ``b`` (integers from 0) and optionally ``split``
(train/val/test or 0/1/2; without it the rows are split 80/10/10 from the seed). Class and bias names
come from the ``class_names`` / ``bias_names`` options, else from ``class_name`` / ``bias_name``
columns, else they are ``class 0``, ``bias 0``, ...
"""

from __future__ import annotations

import io

import pandas as pd

from ffr.datasets.base import GroupedSplit, reader
from ffr.datasets.readers import DatasetRoot, ReaderOptions, build_splits, integer_column, normalize_split_names
from ffr.errors import FFRError
from ffr.groups import GroupSpec
from ffr.options import Field
from ffr.storage import filesystem, is_remote

REQUIRED = ("path", "y", "b")


def _read_table(data: DatasetRoot, metadata: str) -> tuple[pd.DataFrame, str]:
    """The label table (CSV or Parquet by suffix), relative to the root unless absolute or a URI."""
    if is_remote(metadata) or metadata.startswith("/"):
        where = metadata
        fs, path = filesystem(metadata)
        if not fs.isfile(path):
            raise FFRError(f"folder: metadata file {where!r} does not exist")
        with fs.open(path, "rb") as f:
            raw = f.read()
    else:
        where = data.uri_of(metadata)
        raw = data.read_bytes(metadata, "metadata file")
    try:
        if where.lower().endswith(".parquet"):
            table = pd.read_parquet(io.BytesIO(raw))
        elif where.lower().endswith((".csv", ".tsv", ".txt")):
            table = pd.read_csv(io.BytesIO(raw), sep="\t" if where.lower().endswith(".tsv") else ",")
        else:
            raise FFRError(f"folder: metadata file {where!r} must end in .csv, .tsv or .parquet")
    except FFRError:
        raise
    except Exception as e:  # pandas/pyarrow raise many types for unreadable files
        raise FFRError(f"folder: metadata file {where!r} cannot be read ({type(e).__name__})") from None
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise FFRError(f"folder: metadata file {where!r} lacks columns {missing}; expected path, y, b[, split]")
    return table, where


def _names(option: list[str] | None, table: pd.DataFrame, id_column: str, name_column: str, default: str,
           where: str) -> tuple[str, ...]:
    """Names from the option, or a consistent id → name column, or generic ones."""
    n = int(table[id_column].max()) + 1
    if option is not None:
        return tuple(str(x) for x in option)
    if name_column in table.columns:
        pairs = table[[id_column, name_column]].drop_duplicates()
        clash = pairs[pairs[id_column].duplicated(keep=False)]
        if len(clash):
            value = int(clash[id_column].iloc[0])
            raise FFRError(f"{where}: {id_column}={value} has several {name_column} values "
                           f"{sorted(clash[name_column].astype(str).unique())}; expected one name per id")
        by_id = dict(zip(pairs[id_column].astype(int), pairs[name_column].astype(str)))
        return tuple(by_id.get(i, f"{default} {i}") for i in range(n))
    return tuple(f"{default} {i}" for i in range(n))


def _relative(path: str, data: DatasetRoot, where: str) -> str:
    """Keys must be relative to the root so saved splits replay anywhere; strip the root if it was given."""
    for prefix in (data.uri + "/", data.path.rstrip("/") + "/"):
        if path.startswith(prefix):
            return path[len(prefix):]
    if path.startswith("/") or "://" in path:
        raise FFRError(f"{where}: path {path!r} is outside root {data.uri!r}; expected paths relative to the root")
    return path


class FolderOptions(ReaderOptions):
    metadata: str = Field("metadata.csv", description="the label table (.csv/.tsv/.parquet): relative to root, "
                                                      "absolute or s3://")
    class_names: list[str] | None = Field(None, description="names of classes 0, 1, ... (default: the table's "
                                                            "class_name column, else 'class 0', ...)")
    bias_names: list[str] | None = Field(None, description="names of biases 0, 1, ... (default: the table's "
                                                           "bias_name column, else 'bias 0', ...)")


@reader("folder", FolderOptions)
def folder(options: FolderOptions) -> dict[str, GroupedSplit]:
    """A grouped dataset from an image folder and a path/y/b/split table."""
    data = DatasetRoot(options.root, "folder")
    meta, where = _read_table(data, options.metadata)
    if meta.empty:
        raise FFRError(f"folder: metadata file {where!r} has no rows")
    table = pd.DataFrame({
        "key": [_relative(str(p), data, where) for p in meta["path"]],
        "y": integer_column(meta, "y", where),
        "b": integer_column(meta, "b", where),
    })
    if "split" in meta.columns:
        table["split"] = normalize_split_names(meta["split"], where)
    labelled = meta.assign(y=table["y"], b=table["b"])
    spec = GroupSpec(_names(options.class_names, labelled, "y", "class_name", "class", where),
                     _names(options.bias_names, labelled, "b", "bias_name", "bias", where))
    return build_splits(data, table, spec, bias_ratio=options.bias_ratio, seed=options.seed, verify=options.verify)
