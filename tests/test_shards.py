"""The shard container: plain WebDataset reads what generation wrote, reruns give the same bytes, the writer
streams (memory does not grow with the shard) and publishes atomically, on local paths and S3."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from ffr.errors import FFRError
from ffr.groups import GroupSpec
from ffr.shards import SHARD_DIR, ShardReader, ShardWriter, complete_shards, read_metadata, shard_name, write_groups
from ffr.storage import filesystem, join
from pipelines import generate


def _generate(output: str) -> None:
    config = {"recipe": "colored-digits", "output": output, "budget": {"per_group": 3}, "shard_size": 8,
              "batch_size": 4, "generator": {"height": 32, "width": 32}, "progress": False, "runner": "local",
              "contact_sheet_size": 1}
    assert generate(config)["complete"]


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("gen") / "out")
    _generate(root)
    return root


def test_plain_webdataset_reads_the_pipelines_shards(generated):
    meta = read_metadata(generated).set_index("id")
    urls = [str(Path(generated) / SHARD_DIR / f"{shard_name(i)}.tar") for i in complete_shards(generated)]
    seen = {}
    for key, image, prompt, label in wds.WebDataset(urls, shardshuffle=False).decode("pil").to_tuple(
            "__key__", "png", "txt", "cls"):
        assert isinstance(image, Image.Image) and image.size == (32, 32)
        seen[key] = (prompt, label)
    assert set(seen) == set(meta.index)  # every accepted image, once
    assert seen == {i: (row.prompt, int(row.y)) for i, row in meta.iterrows()}
    assert all(p for p, _ in seen.values())
    # the .json member carries the rest of the row (the bias label included); the image bytes are the reader's
    reader = ShardReader(generated)
    for sample in wds.WebDataset(urls, shardshuffle=False).decode():
        assert sample["json"]["b"] == int(meta.loc[sample["__key__"], "b"])
        assert sample["png"] == reader.image_bytes(f"{sample['__key__']}.png")


def test_a_rerun_writes_byte_identical_shards(generated, tmp_path):
    again = str(tmp_path / "again")
    _generate(again)
    names = sorted(p.name for p in (Path(generated) / SHARD_DIR).iterdir() if not p.name.endswith(".stats.json"))
    assert any(n.endswith(".tar") for n in names) and any(n.endswith(".parquet") for n in names)
    for name in names:  # tar (mtime fixed) and parquet; the stats marker holds timings and differs
        assert (Path(generated) / SHARD_DIR / name).read_bytes() == (Path(again) / SHARD_DIR / name).read_bytes(), name


def test_member_offsets_are_a_public_index(generated):
    reader = ShardReader(generated)
    table = reader.members()
    assert list(table.columns) == ["id", "image_key", "shard", "path", "offset", "size"] and len(table) == len(reader)
    for row in table.itertuples():
        with open(row.path, "rb") as f:
            f.seek(row.offset)
            assert f.read(row.size) == reader.image_bytes(row.image_key)
        assert reader.member(row.image_key).offset == row.offset


def _png(k: int, side: int = 64) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(k).integers(0, 255, (side, side, 3), np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _row(k: int) -> dict:
    return {"id": f"g0000-{k:06d}", "y": k % 2, "b": 0, "group": k % 2, "prompt": f"image {k}", "accepted": True,
            "reject_reason": "", "image_key": f"g0000-{k:06d}.png", "guide_key": ""}


def test_the_writer_holds_one_image_not_the_shard(tmp_path):
    root = str(tmp_path / "out")
    write_groups(root, GroupSpec(("a", "b"), ("x",)))
    images = [_png(k, 128) for k in range(4)]  # ~50 KB each, incompressible
    n = 150
    tracemalloc.start()
    with ShardWriter(root, 0) as sink:
        for k in range(n):
            sink.add(_row(k), bytes(images[k % 4]))  # a fresh copy, as an encoder would hand over
        sink.finish({})
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    shard_bytes = (Path(root) / SHARD_DIR / "shard-00000.tar").stat().st_size
    assert shard_bytes > n * len(images[0])
    assert peak < shard_bytes / 10, (peak, shard_bytes)  # buffering the shard would need > shard_bytes
    assert len(ShardReader(root)) == n


_KILLED = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from test_shards import _png, _row
    from ffr.shards import ShardWriter
    sink = ShardWriter(sys.argv[1], 0)
    for k in range(5):
        sink.add(_row(k), _png(k))
    os.kill(os.getpid(), signal.SIGKILL)  # mid-shard, no cleanup of any kind
""")


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_killed_or_failed_writer_publishes_nothing(where, tmp_path, request):
    root = str(tmp_path / "out") if where == "local" else request.getfixturevalue("s3_bucket") + "/out"
    write_groups(root, GroupSpec(("a", "b"), ("x",)))
    child = subprocess.run([sys.executable, "-c", _KILLED.format(tests=str(Path(__file__).parent)), root],
                           capture_output=True, text=True)
    assert child.returncode == -9, child.stderr
    with pytest.raises(RuntimeError), ShardWriter(root, 1) as sink:
        sink.add(_row(0), _png(0))
        raise RuntimeError("the generator failed")
    fs, base = filesystem(root)
    folder = join(base, SHARD_DIR)
    fs.invalidate_cache()
    final = [p for p in (fs.ls(folder, detail=False) if fs.exists(folder) else []) if not str(p).endswith(".tmp")]
    assert final == [] and complete_shards(root) == []
    # a rerun of the killed shard publishes it whole
    with ShardWriter(root, 0) as sink:
        for k in range(5):
            sink.add(_row(k), _png(k))
        sink.finish({})
    reader = ShardReader(root)
    assert complete_shards(root) == [0] and len(reader) == 5
    assert reader.member(_row(0)["image_key"]).path.startswith("s3://" if where == "s3" else "/")
    assert reader.image_bytes(_row(3)["image_key"]) == _png(3)


def test_shards_without_txt_and_cls_members_are_still_read(tmp_path):
    """Shards written before the .txt/.cls members ({id}.png and {id}.json only, PAX headers) read as before."""
    root = str(tmp_path / "out")
    write_groups(root, GroupSpec(("a", "b"), ("x",)))
    with ShardWriter(root, 0) as sink:
        for k in range(3):
            sink.add(_row(k), _png(k))
        sink.finish({})
    tar_path = Path(root) / SHARD_DIR / "shard-00000.tar"
    old = io.BytesIO()
    with tarfile.open(tar_path) as new, tarfile.open(fileobj=old, mode="w") as out:
        for k in range(3):
            row = _row(k)
            for name, data in ((row["image_key"], _png(k)), (f"{row['id']}.json", json.dumps(row).encode())):
                info = tarfile.TarInfo(name)
                info.size, info.mtime = len(data), 0
                out.addfile(info, io.BytesIO(data))
        assert {m.name for m in new}.issuperset({"g0000-000000.txt", "g0000-000000.cls"})
    tar_path.write_bytes(old.getvalue())
    reader = ShardReader(root)
    assert [reader.image_bytes(_row(k)["image_key"]) for k in range(3)] == [_png(k) for k in range(3)]


def test_a_sample_id_with_a_dot_is_refused(tmp_path):
    root = str(tmp_path / "out")
    with ShardWriter(root, 0) as sink, pytest.raises(FFRError, match="no '.'"):
        sink.add({**_row(0), "id": "a.b", "image_key": "a.b.png"}, b"x")
