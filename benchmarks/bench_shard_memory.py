"""Peak memory of a generation actor while it writes one shard: the old sink (the whole shard held in memory,
then tar → bytes → file) against the streaming :class:`ffr.shards.ShardWriter`.

Each writer runs in a fresh subprocess that does what an actor does per image — make a 512² RGB image
(uniform noise: incompressible, the worst case for PNG size), encode it as PNG with the worker's settings, hand
the bytes to the sink — and reports its resident-set peak (VmHWM) minus its resident set after imports and
one warm-up image (VmRSS). Usage::

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_shard_memory.py [--images 1000] [--side 512] [--output DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _old_write_shard(root: str, index: int, rows: list[dict], images: dict[str, bytes], stats: dict) -> None:
    """The sink before streaming, verbatim from ffr/shards.py at commit 38ce2aa: the tar is built in a BytesIO,
    copied out by getvalue() and written, while the caller still holds every image."""
    import tarfile

    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ffr.shards import SHARD_DIR, shard_name
    from ffr.storage import filesystem, join, write_atomic

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
            for member, payload in members:
                info = tarfile.TarInfo(member)
                info.size, info.mtime = len(payload), 0
                tar.addfile(info, io.BytesIO(payload))
    write_atomic(fs, f"{name}.tar", buf.getvalue())
    table = pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False)
    sink = io.BytesIO()
    pq.write_table(table, sink)
    write_atomic(fs, f"{name}.parquet", sink.getvalue())
    stats = {"shard": index, "n_rows": len(rows), "n_accepted": len(rows), "finished_at": time.time(), **stats}
    write_atomic(fs, f"{name}.stats.json", json.dumps(stats, indent=2, default=str).encode())


def _image(rng: np.random.Generator, side: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (side, side, 3), np.uint8)).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def _row(k: int, side: int) -> dict:
    sid = f"g{k % 4:04d}-{k:06d}"
    return {"id": sid, "y": k % 2, "b": (k // 2) % 2, "group": k % 4, "prompt": f"a photo, image {k}",
            "seed": k, "accepted": True, "reject_reason": "", "clip_score": None, "image_key": f"{sid}.png",
            "guide_key": "", "image_width": side, "image_height": side}


def child(writer: str, n: int, side: int, output: str) -> dict:
    """One actor writing one shard of ``n`` images; prints its memory figures as one JSON line."""
    import webdataset  # noqa: F401  (both writers pay the same imports: torch comes with webdataset)

    from ffr.groups import GroupSpec
    from ffr.shards import ShardWriter, write_groups

    write_groups(output, GroupSpec(("a", "b"), ("x", "z")))
    rng = np.random.default_rng(0)
    _image(rng, side)  # warm-up: encoder buffers and allocator arenas exist before the baseline
    baseline = _status_kb("VmRSS")
    start = time.perf_counter()
    tar_bytes = 0
    if writer == "before":  # pipelines/worker.py at 38ce2aa: images gathered in a dict, then write_shard
        rows, images = [], {}
        for k in range(n):
            row = _row(k, side)
            rows.append(row)
            images[row["image_key"]] = _image(rng, side)
        _old_write_shard(output, 0, rows, images, {})
    else:
        with ShardWriter(output, 0) as sink:
            for k in range(n):
                sink.add(_row(k, side), _image(rng, side))
            sink.finish({})
    seconds = time.perf_counter() - start
    tar_bytes = Path(output, "shards", "shard-00000.tar").stat().st_size
    return {"writer": writer, "images": n, "side": side, "baseline_mb": baseline / 1024,
            "peak_increase_mb": (_status_kb("VmHWM") - baseline) / 1024, "tar_mb": tar_bytes / 2**20,
            "seconds": seconds}


def run(writer: str, n: int, side: int, output: str | None) -> dict:
    folder = output or tempfile.mkdtemp(prefix=f"bench-shard-{writer}-")
    try:
        out = subprocess.run([sys.executable, __file__, "--child", writer, "--images", str(n), "--side", str(side),
                              "--output", folder], capture_output=True, text=True, check=True)
    finally:
        if output is None:
            shutil.rmtree(folder, ignore_errors=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--side", type=int, default=512)
    p.add_argument("--output", default=None, help="a local folder (default: a temporary one, removed after)")
    p.add_argument("--child", choices=("before", "after"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.images, args.side, args.output)))
        return
    results = {w: run(w, args.images, args.side, args.output and str(Path(args.output) / w))
               for w in ("before", "after")}
    for r in results.values():
        print(f"{r['writer']:>6}: one shard of {r['images']} images of {r['side']}² PNG ({r['tar_mb']:.0f} MiB tar): "
              f"peak RSS +{r['peak_increase_mb']:.0f} MiB over {r['baseline_mb']:.0f} MiB after imports, "
              f"{r['seconds']:.1f} s")
    ratio = results["before"]["peak_increase_mb"] / max(results["after"]["peak_increase_mb"], 1e-9)
    print(f"peak memory per actor: before / after = {ratio:.1f}x")


if __name__ == "__main__":
    main()
