"""One batch of images → top-5 predictions of one classifier (Ray-free; the Ray actor and plain loops wrap it).

A plan row says where an image's bytes are: ``path`` plus ``offset``/``size`` inside a shard tar (resolved
once on the driver), or ``offset = -1`` for a whole file (a reference folder). Rows of one batch that sit in
the same tar are fetched with one ranged read of their span, which matters on S3.
"""

from __future__ import annotations

import io
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image

from ffr.d3s.models import load_classifier
from ffr.storage import filesystem

MAX_SPAN = 64 << 20  # one read per tar per batch when the batch's members lie within 64 MiB


def read_bytes(paths: np.ndarray, offsets: np.ndarray, sizes: np.ndarray) -> list[bytes]:
    out: list[bytes | None] = [None] * len(paths)
    by_path: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(paths):
        by_path[str(p)].append(i)
    for path, rows in by_path.items():
        fs, inner = filesystem(path)
        whole = [i for i in rows if int(offsets[i]) < 0]
        for i in whole:
            out[i] = fs.cat_file(inner)
        parts = [i for i in rows if int(offsets[i]) >= 0]
        if not parts:
            continue
        lo = min(int(offsets[i]) for i in parts)
        hi = max(int(offsets[i]) + int(sizes[i]) for i in parts)
        if hi - lo <= MAX_SPAN:
            span = fs.cat_file(inner, start=lo, end=hi)
            for i in parts:
                out[i] = span[int(offsets[i]) - lo:int(offsets[i]) - lo + int(sizes[i])]
        else:
            for i in parts:
                out[i] = fs.cat_file(inner, start=int(offsets[i]), end=int(offsets[i]) + int(sizes[i]))
    return out  # type: ignore[return-value]


class Predictor:
    """Loads one classifier once (on the GPU when there is one), then predicts batches of plan rows."""

    def __init__(self, spec: str, device: str = "auto", threads: int | None = None,
                 class_names: tuple[str, ...] = (), templates: tuple[str, ...] = ()) -> None:
        """``threads``: decode threads and torch CPU threads — the actor's CPU share under Ray, so actors on
        one node do not oversubscribe it; None keeps torch's default (a plain in-process loop).
        ``class_names``/``templates``: what a zero-shot model (clip:) builds its class head from."""
        if threads is not None:
            torch.set_num_threads(max(1, threads))
        self.model = load_classifier(spec, class_names, templates)
        want = "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
        self.device = torch.device(want)
        self.model.module.to(self.device)
        self.k = min(5, self.model.n_classes)
        self.pool = ThreadPoolExecutor(threads or 4)  # decoding + resizing release the GIL

    def _tensor(self, data: bytes) -> torch.Tensor:
        return self.model.preprocess(Image.open(io.BytesIO(data)).convert("RGB"))

    @torch.inference_mode()
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        blobs = read_bytes(batch["path"], batch["offset"], batch["size"])
        x = torch.stack(list(self.pool.map(self._tensor, blobs))).to(self.device, non_blocking=True)
        probs = torch.softmax(self.model.module(x).float(), dim=1)
        scores, top = probs.topk(self.k, dim=1)
        n = len(blobs)
        return {"id": batch["id"], "model": np.full(n, self.model.name, dtype=object), "y": batch["y"],
                "background": batch["background"], "top5": top.cpu().numpy().astype(np.int64),
                "top5_scores": scores.cpu().numpy().astype(np.float32)}
