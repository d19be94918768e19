"""The on-disk contract between generation and training: WebDataset shards + Parquet metadata.

Layout under an output root (a local path or ``s3://bucket/prefix``)::

    groups.json                         the GroupSpec (class and bias names)
    shards/shard-00000.tar              WebDataset, one sample per accepted image (key = its id, no dots):
                                          {id}.png|jpg|webp   the image, as encoded by the generator
                                          {id}.txt            the prompt
                                          {id}.cls            the class index y (ASCII digits)
                                          {id}.json           the whole metadata row (bias label, seed, ...)
                                          {id}.guide.png|...  the img2img guide, when there is one
    shards/shard-00000.parquet          one row per manifest id of the shard (accepted or rejected)
    shards/shard-00000.stats.json       written LAST: the completion marker (img2dataset's pattern)

So plain ``webdataset.WebDataset(url).decode("pil").to_tuple("png", "txt", "cls")`` and open_clip's
``--dataset-type webdataset`` read the shards as they are. Shards written before the ``.txt``/``.cls`` members
existed have the same image and ``.json`` members and are read by the same code.

A shard is streamed: each image goes into the tar as it is made (:class:`ShardWriter`), so a writer holds one
image at a time, not the shard. The tar is spooled to ``{name}.tar.tmp`` beside its final name (a local path) or
to a local temporary file that is then uploaded to its final key (an object store, where an object appears only
when its upload completes), then parquet and the stats file follow. A shard without its stats file is
incomplete and is redone on resume; readers ignore it. A killed writer never leaves a half file under a final
name.
"""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
import time
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ffr.errors import FFRError
from ffr.groups import GroupSpec
from ffr.storage import ensure_dir, filesystem, is_object_store, is_remote, join, no_space, write_atomic

SHARD_DIR = "shards"
METADATA_COLUMNS = ("id", "y", "b", "group", "accepted", "reject_reason", "image_key")
TAR_MTIME = 0  # every member's mtime: the same shard gives the same bytes on every run


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


def _member_suffix(sample_id: str, member: str) -> str:
    """'png' for ('g0001-000002', 'g0001-000002.png'): the WebDataset extension of one of a sample's members."""
    if "." in sample_id or "/" in sample_id or not member.startswith(f"{sample_id}."):
        raise FFRError(f"shard member {member!r} of sample {sample_id!r}: a WebDataset sample id has no '.' or '/' "
                       "and every member is named '<id>.<extension>'")
    return member[len(sample_id) + 1:]


def sample(row: dict, image: bytes, guide: bytes | None = None) -> dict[str, Any]:
    """The WebDataset sample of one accepted row: image, prompt (.txt), class index (.cls), the row (.json)."""
    sample_id = str(row["id"])
    members: dict[str, Any] = {
        "__key__": sample_id,
        _member_suffix(sample_id, str(row["image_key"])): image,
        "txt": str(row.get("prompt") or "").encode(),
        "cls": str(int(row["y"])).encode(),
        "json": json.dumps(row, default=str, sort_keys=True).encode(),
    }
    if guide is not None:  # an img2img guide, kept beside its image
        members[_member_suffix(sample_id, str(row["guide_key"]))] = guide
    return members


class ShardWriter:
    """One shard, streamed: rows and images are added as they are made; :meth:`finish` publishes the tar, the
    parquet and then the stats marker. Used as a context manager, an exception (or a full disk, reported in one
    line) discards the spooled tar, so nothing is published::

        with ShardWriter(root, 3) as sink:
            for row, image in made:
                sink.add(row, image if row["accepted"] else None)
            sink.finish({"seconds": 1.5})
    """

    def __init__(self, root: str, index: int) -> None:
        # Imported here: webdataset imports torch (about a second), which shard readers do not need.
        from webdataset import TarWriter

        self.index = index
        self.rows: list[dict] = []
        self.n_images = 0
        self._fs, base = filesystem(root)
        ensure_dir(self._fs, join(base, SHARD_DIR))
        self._name = join(base, SHARD_DIR, shard_name(index))
        self._tar_path = f"{self._name}.tar"
        self._tar: Any = None
        self._spool: IO[bytes] | None = None
        if is_object_store(self._fs):
            self._spool_path = None  # deleted when closed, also when the writer fails
            self._spool = tempfile.NamedTemporaryFile(prefix=f"ffr-{shard_name(index)}-", suffix=".tar")
        else:
            self._spool_path = f"{self._tar_path}.tmp"
            self._spool = self._guard(lambda: self._fs.open(self._spool_path, "wb"))
        self._tar = TarWriter(self._spool, encoder=False, mtime=TAR_MTIME, user="ffr", group="ffr")

    def add(self, row: dict, image: bytes | None = None, guide: bytes | None = None) -> None:
        """One manifest row (its parquet row); ``image`` (and its img2img ``guide``) go into the tar now."""
        self.rows.append(row)
        if image is not None:
            self._guard(lambda: self._tar.write(sample(row, image, guide)))
            # tarfile keeps a TarInfo per member written, for getmembers(); a writer never asks, so don't let
            # the list grow with the shard
            self._tar.tarstream.members.clear()
            self.n_images += 1

    def finish(self, stats: dict) -> dict:
        """Publish tar, parquet, then the stats marker (last); returns the stats as written."""
        self._guard(self._publish_tar)
        table = pa.Table.from_pandas(pd.DataFrame(self.rows), preserve_index=False)
        buf = io.BytesIO()
        pq.write_table(table, buf)
        write_atomic(self._fs, f"{self._name}.parquet", buf.getvalue())
        stats = {"shard": self.index, "n_rows": len(self.rows),
                 "n_accepted": int(sum(bool(r.get("accepted")) for r in self.rows)), "finished_at": time.time(),
                 **stats}
        write_atomic(self._fs, f"{self._name}.stats.json", json.dumps(stats, indent=2, default=str).encode())
        return stats

    def abort(self) -> None:
        """Drop the spooled tar (idempotent; a no-op once the tar is published): nothing is published."""
        tar, spool, self._tar, self._spool = self._tar, self._spool, None, None
        if spool is None:
            return
        for close in ((tar.close,) if tar is not None else ()) + (spool.close,):
            try:
                close()
            except OSError:  # a full disk again while closing: the spool is removed below anyway
                pass
        if self._spool_path is not None:
            try:
                self._fs.rm(self._spool_path)
            except OSError:
                pass

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.abort()

    def _publish_tar(self) -> None:
        self._tar.close()  # the end-of-archive blocks; the spool stays open (TarWriter did not open it)
        spool = self._spool
        if self._spool_path is None:
            spool.flush()
            # One upload to the final key (multipart in parts for a large tar): the object appears only when
            # the upload completes, so no temporary key and no server-side copy are needed.
            self._fs.put_file(spool.name, self._tar_path)
            spool.close()
        else:
            spool.close()
            self._fs.mv(self._spool_path, self._tar_path)
        self._tar = self._spool = None

    def _guard(self, step):
        """Run one write step; a full disk drops the spooled tar and becomes one line (a rerun resumes)."""
        try:
            return step()
        except OSError as e:
            if not no_space(e):
                raise
            where = self._spool_path or getattr(self._spool, "name", self._tar_path)
            self.abort()
            raise FFRError(f"no space left on the device writing {where!r} (shard {self.index}); free space or "
                           "choose another output, then rerun the same command to resume") from None


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


@dataclass(frozen=True)
class Member:
    """Where one stored image (or img2img guide) lies: its shard's tar and the byte range of its data."""

    shard: int
    path: str  # the tar: a local path or a URI (s3://bucket/key), as any reader of byte ranges takes it
    offset: int
    size: int


class ShardReader:
    """Random access to images in the shards of one output root (local or S3), by image key (``{id}.png``).

    Indexes each tar's member offsets once; reading an image is then one ranged read. :meth:`member` and
    :meth:`members` give those offsets to readers that fetch byte ranges themselves.
    """

    def __init__(self, root: str) -> None:
        self.root = root
        self.spec = read_groups(root)
        self.metadata = read_metadata(root)
        self._fs, base = filesystem(root)
        self._paths = {int(i): join(base, SHARD_DIR, f"{shard_name(i)}.tar") for i in self.metadata["shard"].unique()}
        # Only images and guides are indexed, not the .txt/.cls/.json members that plain WebDataset readers use.
        wanted = set(self.metadata["image_key"].astype(str))
        if "guide_key" in self.metadata.columns:
            wanted |= {str(k) for k in self.metadata["guide_key"] if isinstance(k, str) and k}
        self._members: dict[str, Member] = {}
        for i, path in self._paths.items():
            uri = self._fs.unstrip_protocol(path) if is_remote(root) else path
            with self._fs.open(path, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
                for info in tar:
                    if info.name in wanted:
                        self._members[info.name] = Member(i, uri, info.offset_data, info.size)
        missing = [k for k in self.metadata["image_key"] if k not in self._members]
        if missing:
            raise FFRError(f"shard metadata names image {missing[0]!r} that is not in its tar under {root!r}")

    def __len__(self) -> int:
        return len(self.metadata)

    def member(self, key: str) -> Member:
        """The tar and byte range of an image (``image_key``) or guide (``guide_key``); KeyError if absent."""
        return self._members[key]

    def members(self) -> pd.DataFrame:
        """id, image_key, shard, path, offset, size: each accepted sample's image member, in metadata order."""
        found = [self._members[k] for k in self.metadata["image_key"]]
        return pd.DataFrame({"id": self.metadata["id"].astype(str).to_numpy(),
                             "image_key": self.metadata["image_key"].astype(str).to_numpy(),
                             "shard": np.array([m.shard for m in found], np.int64),
                             "path": [m.path for m in found],
                             "offset": np.array([m.offset for m in found], np.int64),
                             "size": np.array([m.size for m in found], np.int64)})

    def image_bytes(self, key: str) -> bytes:
        m = self._members[key]
        # One ranged read (an HTTP Range GET on S3), not a buffered open that would fetch a whole block.
        return self._fs.cat_file(self._paths[m.shard], start=m.offset, end=m.offset + m.size)

    def labels(self) -> tuple[np.ndarray, np.ndarray]:
        return self.metadata["y"].to_numpy(np.int64), self.metadata["b"].to_numpy(np.int64)
