"""The on-disk contract between generation and training: WebDataset shards + Parquet metadata.

Layout under an output root (a local path or ``s3://bucket/prefix``)::

    groups.json                         the GroupSpec (class and bias names)
    shards/shard-00000.tar              WebDataset: {id}.{png|jpg|webp} and {id}.json per accepted image
    shards/shard-00000.parquet          one row per manifest id of the shard (accepted or rejected)
    shards/shard-00000.stats.json       written LAST: the completion marker (img2dataset's pattern)

A shard without its stats file is incomplete and is redone on resume; readers ignore it. Writes go to
a temporary name first and are renamed into place, so a killed writer never leaves a half file under a
final name.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ffr.errors import FFRError
from ffr.groups import GroupSpec
from ffr.storage import ensure_dir, filesystem, join, write_atomic

SHARD_DIR = "shards"
METADATA_COLUMNS = ("id", "y", "b", "group", "accepted", "reject_reason", "image_key")


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


def write_groups(root: str, spec: GroupSpec) -> None:
    fs, base = filesystem(root)
    ensure_dir(fs, join(base, SHARD_DIR))
    write_atomic(fs, join(base, "groups.json"), json.dumps(spec.to_dict(), indent=2).encode())


def read_groups(root: str) -> GroupSpec:
    fs, base = filesystem(root)
    path = join(base, "groups.json")
    if not fs.exists(path):
        raise FFRError(f"{root!r} is not a generation output: {join(root, 'groups.json')!r} is missing")
    return GroupSpec.from_dict(json.loads(fs.cat_file(path)))


def write_shard(root: str, index: int, rows: list[dict], images: dict[str, bytes], stats: dict) -> None:
    """Write one complete shard: tar, then parquet, then the stats marker (last)."""
    fs, base = filesystem(root)
    name = join(base, SHARD_DIR, shard_name(index))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for row in rows:
            key = row.get("image_key")
            if not row.get("accepted") or key not in images:
                continue
            sample_id = str(row["id"])
            members = [(key, images[key]), (f"{sample_id}.json", json.dumps(row, default=str, sort_keys=True).encode())]
            if row.get("guide_key") in images:  # an img2img guide, kept beside its image
                members.append((row["guide_key"], images[row["guide_key"]]))
            for member, payload in members:
                info = tarfile.TarInfo(member)
                info.size, info.mtime = len(payload), 0  # mtime 0: identical input → identical bytes
                tar.addfile(info, io.BytesIO(payload))
    write_atomic(fs, f"{name}.tar", buf.getvalue())
    table = pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False)
    sink = io.BytesIO()
    pq.write_table(table, sink)
    write_atomic(fs, f"{name}.parquet", sink.getvalue())
    stats = {"shard": index, "n_rows": len(rows), "n_accepted": int(sum(bool(r.get("accepted")) for r in rows)),
             "finished_at": time.time(), **stats}
    write_atomic(fs, f"{name}.stats.json", json.dumps(stats, indent=2, default=str).encode())


def complete_shards(root: str) -> list[int]:
    """Indices of shards whose completion marker exists."""
    fs, base = filesystem(root)
    folder = join(base, SHARD_DIR)
    if not fs.exists(folder):
        return []
    fs.invalidate_cache(folder)
    done = []
    for path in fs.ls(folder, detail=False):
        leaf = str(path).rsplit("/", 1)[-1]
        if leaf.startswith("shard-") and leaf.endswith(".stats.json"):
            done.append(int(leaf[len("shard-"):-len(".stats.json")]))
    return sorted(done)


def read_stats(root: str, index: int) -> dict:
    fs, base = filesystem(root)
    return json.loads(fs.cat_file(join(base, SHARD_DIR, f"{shard_name(index)}.stats.json")))


def read_metadata(root: str, accepted_only: bool = True) -> pd.DataFrame:
    """All rows of all complete shards, with a ``shard`` column."""
    fs, base = filesystem(root)
    frames = []
    for i in complete_shards(root):
        with fs.open(join(base, SHARD_DIR, f"{shard_name(i)}.parquet"), "rb") as f:
            frame = pq.read_table(f).to_pandas()
        frame["shard"] = i
        frames.append(frame)
    if not frames:
        raise FFRError(f"no complete shards under {root!r}; run 'ffr generate' first (or let it finish)")
    df = pd.concat(frames, ignore_index=True)
    return df[df["accepted"].astype(bool)].reset_index(drop=True) if accepted_only else df


@dataclass
class _Member:
    shard: int
    offset: int
    size: int


class ShardReader:
    """Random access to images in the shards of one output root (local or S3), by sample id.

    Indexes each tar's member offsets once; reading an image is then one ranged read.
    """

    def __init__(self, root: str) -> None:
        self.root = root
        self.spec = read_groups(root)
        self.metadata = read_metadata(root)
        self._fs, base = filesystem(root)
        self._paths = {i: join(base, SHARD_DIR, f"{shard_name(i)}.tar") for i in self.metadata["shard"].unique()}
        self._members: dict[str, _Member] = {}
        for i, path in self._paths.items():
            with self._fs.open(path, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
                for info in tar:
                    self._members[info.name] = _Member(int(i), info.offset_data, info.size)
        missing = [k for k in self.metadata["image_key"] if k not in self._members]
        if missing:
            raise FFRError(f"shard metadata names image {missing[0]!r} that is not in its tar under {root!r}")

    def __len__(self) -> int:
        return len(self.metadata)

    def member(self, image_key: str) -> tuple[str, int, int]:
        """Where an image's bytes lie: (its tar's path relative to the root, byte offset, size). A run plan
        (ffr.training.plan) keeps these so workers read images by byte range without indexing the tar again."""
        m = self._members[image_key]
        return f"{SHARD_DIR}/{shard_name(m.shard)}.tar", m.offset, m.size

    def image_bytes(self, image_key: str) -> bytes:
        m = self._members[image_key]
        # One ranged read (an HTTP Range GET on S3), not a buffered open that would fetch a whole block.
        return self._fs.cat_file(self._paths[m.shard], start=m.offset, end=m.offset + m.size)

    def labels(self) -> tuple[np.ndarray, np.ndarray]:
        return self.metadata["y"].to_numpy(np.int64), self.metadata["b"].to_numpy(np.int64)
