"""A small guided generation output for the review tests, written through the real shard writer.

Two classes × two backgrounds; every row is img2img with recorded guide files (so the app rebuilds the
guide), a definition column on class 0 only (class 1's comes from a definitions file), and a folder of
reference images for class 0. Generated images are flat colors with a darker square: cheap, but real PNGs.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from PIL import Image, ImageDraw

from ffr.groups import GroupSpec
from ffr.shards import ShardWriter, write_groups
from ffr.storage import filesystem, join

CLASSES, BACKGROUNDS = ("goldfish", "tabby cat"), ("grass", "water")
COLORS = [(214, 140, 40), (120, 120, 130)]
BG_COLORS = [(60, 150, 60), (40, 90, 200)]


def _png(color, square=None, size=64) -> bytes:
    image = Image.new("RGB", (size, size), color)
    if square:
        ImageDraw.Draw(image).rectangle((16, 16, 48, 48), fill=square)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _put(root: str, rel: str, data: bytes) -> str:
    fs, base = filesystem(root)
    path = join(base, rel)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "wb") as f:
        f.write(data)
    return join(root, rel)


def build_review_output(root: str, per_group: int = 6, shard_size: int = 10, assets: str | None = None) -> dict:
    """Write the output under ``root`` (local or s3://); guide/reference/definition files under ``assets``."""
    if assets is None:
        assets = f"{root}-assets"
    spec = GroupSpec(CLASSES, BACKGROUNDS)
    write_groups(root, spec)
    fg = [_put(assets, f"fg/{y}.png", _png(COLORS[y], (0, 0, 0))) for y in range(2)]
    bg = [_put(assets, f"bg/{b}.png", _png(BG_COLORS[b])) for b in range(2)]
    for k in range(4):
        _put(assets, f"refs/{CLASSES[0]}/{k}.png", _png(COLORS[0], (20 * k, 0, 0)))
    cat = {CLASSES[1]: "a domestic cat with a striped coat"}
    definitions = _put(assets, "definitions.json", json.dumps(cat).encode())
    rows = []
    for k in range(per_group):
        for y in range(2):
            for b in range(2):
                g = spec.group_id(y, b)
                sid = f"g{g:04d}-{k:06d}"
                rows.append({"id": sid, "recipe": "review-fixture", "y": y, "b": b, "group": g,
                             "class_name": CLASSES[y], "bias_name": BACKGROUNDS[b], "group_name": spec.group_name(g),
                             "prompt": f"a photo of a {CLASSES[y]}, {BACKGROUNDS[b]}", "seed": 1000 + len(rows),
                             "mode": "img2img", "width": 64, "guide_foreground": fg[y], "guide_background": bg[b],
                             "definition": "a small orange fish kept in ponds" if y == 0 else "",
                             # the last image of group 0 was rejected by generation's own filters
                             "accepted": not (g == 0 and k == per_group - 1), "reject_reason": "",
                             "image_key": f"{sid}.png"})
    images = {r["image_key"]: _png(BG_COLORS[r["b"]], COLORS[r["y"]]) for r in rows if r["accepted"]}
    for shard in range(0, (len(rows) + shard_size - 1) // shard_size):
        part = rows[shard * shard_size:(shard + 1) * shard_size]
        with ShardWriter(root, shard) as sink:  # generation's own writer: the same files, streamed
            for r in part:
                sink.add(r, images[r["image_key"]] if r["accepted"] else None)
            sink.finish({})
    return {"root": root, "references": join(assets, "refs"), "definitions": definitions,
            "n_accepted": len(images), "n_rows": len(rows)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``ffr review serve`` in a subprocess (a real uvicorn server on loopback)."""

    def __init__(self, args: list[str], log: Path, env: dict | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with open(log, "w") as out:  # a file, not a pipe nobody reads: a chatty server must never block
            self.proc = subprocess.Popen([sys.executable, "-m", "ffr.cli", "review", "serve", "--port",
                                          str(self.port), *args], stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("server did not start in 60 s")

    def cpu_seconds(self) -> float:
        """CPU time the server process has used (Linux /proc; 0 elsewhere) — a load-independent cost figure."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
