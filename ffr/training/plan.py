"""A run's data plan: the driver resolves the data once, workers read what it wrote.

Resolving a dataset lists storage (S3 listings), indexes shard tars and may decode every image (bad-image
scans). The driver does that once per experiment (:func:`ffr.training.data.load_experiment_data`) and writes,
into each stage's run directory, ``plan.parquet``: one row per example of every table the stage needs — real
train / val / test and the stage's training set — with its key, labels and source, and where its bytes are
(e.g. a shard's tar, offset and size). The Parquet's key-value metadata (``ffr.plan``) holds the rest as JSON:
group specs, each table's split name and columns, the image loaders' descriptions and the skipped images.
An experiment with synthetic data adds its held-out synthetic images (``synthetic/heldout``) to every stage's
plan: the evaluation of each stage's checkpoint runs the (B, G) diagnostic on them.

One file, written atomically: a worker never sees half a plan. ``splits.parquet`` stays what it was (the
human-facing record of which examples a run used); the plan is what the code reads back.
Ray Train workers, the evaluation task and JTT's task call :func:`read_plan` and nothing else.
"""

from __future__ import annotations

import io
import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ffr.datasets.base import IMAGE_SOURCES, GroupedSplit, PartLoader
from ffr.errors import FFRError
from ffr.groups import GroupSpec
from ffr.storage import ensure_dir, filesystem, join, write_atomic
from ffr.training.data import ExperimentData
from ffr.variants import StageData

PLAN = "plan.parquet"
FORMAT = 1
_METADATA_KEY = b"ffr.plan"
# Plan-only columns; "@" keeps them apart from any column a dataset reader keeps in its tables.
_TABLE, _PART, _AT = "@table", "@part", "@"
HELDOUT = "synthetic/heldout"  # held-out synthetic images, for the (B, G) diagnostic of every stage


def plan_path(directory: str) -> str:
    return join(directory, PLAN)


def _loader_parts(split: GroupedSplit) -> tuple[list, pd.Series, pd.Series]:
    """(loaders, part index per row, key within its part): concatenated splits have one loader per part."""
    keys = split.table["key"].astype(str)
    if isinstance(split.load_image, PartLoader):
        pieces = keys.str.partition("\0")
        return split.load_image.loaders, pieces[0].astype("int64"), pieces[2]
    return [split.load_image], pd.Series(0, index=keys.index, dtype="int64"), keys


def _describe(loader, keys: list[str], table: str) -> tuple[dict, dict | None]:
    if not hasattr(loader, "to_plan"):
        raise FFRError(f"the image loader {loader!r} of table {table!r} cannot be written to a run plan; "
                       "expected a loader registered in ffr.datasets.base.IMAGE_SOURCES (to_plan / from_plan)")
    return loader.to_plan(keys)


def plan_frame(data: ExperimentData, stage: int) -> tuple[pd.DataFrame, dict]:
    """The plan of one stage's run: rows of every table and the JSON header (see the module docstring)."""
    stage_data = data.stages[stage]
    named = {f"real/{name}": split for name, split in data.real.items()}
    if data.heldout is not None:
        named[HELDOUT] = data.heldout
    train = next((name for name, split in named.items() if split is stage_data.train), None)
    if train is None:
        train = "stage/train"
        named[train] = stage_data.train
    if data.mix is not None:
        named["mix/train"] = data.mix
    loaders: list[dict] = []
    tables: dict[str, dict] = {}
    frames = []
    for name, split in named.items():
        parts, part_of, inner = _loader_parts(split)
        frame = split.table.copy()
        frame[_TABLE], frame[_PART] = name, part_of.to_numpy()
        indices = []
        for p, loader in enumerate(parts):
            rows = (part_of == p).to_numpy()
            description, columns = _describe(loader, inner[rows].tolist(), name)
            if description not in loaders:
                loaders.append(description)
            indices.append(loaders.index(description))
            for column, values in (columns or {}).items():
                if _AT + column not in frame:
                    frame[_AT + column] = None
                frame.loc[rows, _AT + column] = pd.Series(values, index=frame.index[rows], dtype=object)
        tables[name] = {"name": split.name, "spec": split.spec.to_dict(), "loaders": indices,
                        "concat": isinstance(split.load_image, PartLoader),
                        "dtypes": {str(c): str(t) for c, t in split.table.dtypes.items()}}
        frames.append(frame)
    header = {"format": FORMAT, "stage": stage, "train": train, "train_spec": stage_data.train_spec.to_dict(),
              "skipped_images": list(data.skipped_images), "tables": tables, "loaders": loaders,
              **({"mix": "mix/train"} if data.mix is not None else {})}
    frame = pd.concat(frames, ignore_index=True)
    for column in frame.columns:  # address columns of several loaders mix types; keep Parquet typed
        if column.startswith(_AT) and column not in (_TABLE, _PART) and frame[column].dtype == object:
            values = frame[column].dropna()
            if len(values) and all(isinstance(v, int) for v in values):
                frame[column] = frame[column].astype("Int64")
            elif len(values):
                frame[column] = frame[column].astype("string")
    return frame, header


def write_plan(directory: str, data: ExperimentData, stage: int) -> str:
    """Write ``plan.parquet`` of ``stage`` into run directory ``directory``; returns its path."""
    frame, header = plan_frame(data, stage)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           _METADATA_KEY: json.dumps(header).encode()})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    path = plan_path(directory)
    fs, inner = filesystem(directory)
    ensure_dir(fs, inner)
    write_atomic(fs, filesystem(path)[1], sink.getvalue())
    return path


def read_plan(path: str) -> ExperimentData:
    """The :class:`ExperimentData` a plan holds (only the planned stage in ``.stages``); reads one file."""
    fs, inner = filesystem(path)
    try:
        with fs.open(inner, "rb") as f:
            table = pq.read_table(f)
    except FileNotFoundError:
        raise FFRError(f"run plan {path!r} does not exist; the driver writes it before training starts") from None
    raw = (table.schema.metadata or {}).get(_METADATA_KEY)
    header = json.loads(raw) if raw else {}
    if header.get("format") != FORMAT:
        raise FFRError(f"{path!r} is not an ffr run plan of format {FORMAT} (found {header.get('format')!r})")
    frame = table.to_pandas()
    splits: dict[str, GroupedSplit] = {}
    for name, info in header["tables"].items():
        rows = frame[frame[_TABLE] == name]
        keys = rows["key"].astype(str)
        inner_keys = keys.str.partition("\0")[2] if info["concat"] else keys
        loaders = []
        for p, index in enumerate(info["loaders"]):
            part = (rows[_PART] == p).to_numpy()
            description = header["loaders"][index]
            columns = rows.loc[part, [c for c in rows.columns if c.startswith(_AT) and c not in (_TABLE, _PART)]]
            columns = columns.rename(columns=lambda c: c[len(_AT):])
            loaders.append(IMAGE_SOURCES.get(description["kind"]).from_plan(description, inner_keys[part].tolist(),
                                                                            columns))
        dtypes = info["dtypes"]
        split_table = rows[list(dtypes)].astype(dtypes).reset_index(drop=True)
        splits[name] = GroupedSplit(GroupSpec.from_dict(info["spec"]), split_table,
                                    PartLoader(loaders) if info["concat"] else loaders[0], info["name"])
    real = {name.split("/", 1)[1]: split for name, split in splits.items() if name.startswith("real/")}
    stage = int(header["stage"])
    stage_data = StageData(stage, splits[header["train"]], GroupSpec.from_dict(header["train_spec"]))
    mix = splits[header["mix"]] if header.get("mix") else None
    return ExperimentData(real, {stage: stage_data}, list(header["skipped_images"]), heldout=splits.get(HELDOUT),
                          mix=mix)
