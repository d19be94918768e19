"""One shard, start to finish: manifest rows → images → filters → encoded bytes → a complete shard.

Ray-free on purpose: the Ray Data actor (pipelines/job.py) wraps :class:`ShardWorker`, and so do the
``local`` runner and the overhead benchmark's bare Python loop, so all three run exactly this code.
A shard is streamed through :class:`ffr.shards.ShardWriter` (each image into the tar as it is encoded; then
parquet, then the stats marker last), so it is either complete or invisible.
"""

from __future__ import annotations

import io
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from ffr.shards import ShardWriter
from ffr.storage import storage_retries
from pipelines import backends
from pipelines.filters import Filters
from pipelines.guides import make_guide, resolve
from pipelines.manifest import read_manifest_shard

PIL_FORMATS = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}
ENCODE_ARGS = {"png": {"compress_level": 1}, "jpg": {"quality": 95}, "webp": {"quality": 95}}


@dataclass
class WorkerSettings:
    """Everything an actor needs (picklable): where to read and write, and how to generate and filter."""

    output: str
    backend: str
    backend_settings: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 8
    image_format: str = "png"
    gray_threshold: float = 0.0
    clip_model: str | None = None
    clip_threshold: float = 20.0
    generator: str = ""  # the output's generator label (backend, model, what changes the images), on every record


def encode(image: Image.Image, image_format: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=PIL_FORMATS[image_format], **ENCODE_ARGS[image_format])
    return buf.getvalue()


def guide_images(rows: list[dict], output: str = "") -> list[Image.Image] | None:
    """img2img guides for a batch (None for text-to-image rows); relative refs live under ``output``."""
    if not rows or rows[0].get("mode") != "img2img":
        return None
    return [make_guide(resolve(r["guide_foreground"], output), resolve(r["guide_background"], output),
                       int(r["seed"]), int(r["width"])) for r in rows]


class ShardWorker:
    """Built once per process/actor (loads the backend and filters), then called once per shard."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.backend = backends.create(settings.backend, settings.backend_settings, settings.batch_size)
        self.filters = Filters(settings.gray_threshold, settings.clip_model, settings.clip_threshold)

    def process_shard(self, shard: int, rows: list[dict] | None = None) -> dict[str, Any]:
        """Generate, filter, encode and write one shard; returns its small stats dict."""
        s = self.settings
        start = time.perf_counter()
        retries_before = storage_retries()
        rows = read_manifest_shard(s.output, shard) if rows is None else rows
        rejects: Counter = Counter()
        per_group: Counter = Counter()
        # Each image goes into the shard's tar as soon as it is encoded: an actor holds one batch, not the shard.
        with ShardWriter(s.output, shard) as sink:
            for i in range(0, len(rows), s.batch_size):
                batch = rows[i:i + s.batch_size]
                guides = guide_images(batch, s.output)
                generated = self.backend.generate(batch, guides)
                verdicts = self.filters(generated, [r["prompt"] for r in batch])
                for j, (row, image, verdict) in enumerate(zip(batch, generated, verdicts)):
                    key = f"{row['id']}.{s.image_format}"
                    # img2img: the guide is stored beside its image, so the pair can be reviewed later
                    guide_key = f"{row['id']}.guide.{s.image_format}" if guides is not None else ""
                    out = {**row, **self.backend.record(row), "generator": s.generator or s.backend,
                           "accepted": verdict.accepted, "reject_reason": verdict.reason,
                           "clip_score": verdict.clip_score, "image_key": key, "guide_key": guide_key,
                           "image_width": image.width, "image_height": image.height}
                    if verdict.accepted:
                        sink.add(out, encode(image, s.image_format),
                                 encode(guides[j], s.image_format) if guide_key else None)
                        per_group[str(row["group"])] += 1
                    else:
                        sink.add(out)
                        rejects[verdict.reason] += 1
            seconds = time.perf_counter() - start
            stats = {"seconds": round(seconds, 4), "rejects": dict(rejects), "accepted_per_group": dict(per_group)}
            sampler = self.backend.sampler()
            if sampler is not None:  # in the shard's marker too: the record of how its images were sampled
                stats["sampler"] = sampler
            sink.finish(stats)
        # object-store retries this shard needed (its own writes; counted by ffr.storage) → summary.json
        return {"shard": shard, "n_rows": len(rows), "n_accepted": sink.n_images, **stats,
                "storage_retries": storage_retries() - retries_before}
