"""What a rater sees, read straight from the generation output: images by id through the shards' byte-offset
index (one ranged read each, local or ``s3://``), the img2img guide rebuilt from its recorded files and seed,
the class definition and up to four reference images of the class from a folder.

Ids from a URL are checked against a strict pattern and then looked up in the index: nothing a client sends
is ever used as a path. (Who may see which image is the app's business: a rater, only their own tasks'.)

Guides cost CPU (a composite of two files, PNG-encoded), so they are built at most once per id at a time, a
few at a time overall, and kept in a cache bounded in bytes.
"""

from __future__ import annotations

import io
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Callable

from ffr.errors import FFRError
from ffr.shards import ShardReader
from ffr.storage import filesystem

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
MEDIA_TYPES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp",
               "bmp": "image/bmp"}
MAX_REFERENCES = 4  # D3S showed four ImageNet images of the class
GUIDE_CACHE_BYTES = 64 << 20  # ~200 guides of 512 px: every open task's guides, a bounded amount of memory
GUIDE_BUILDS_AT_ONCE = 2  # of the server's worker threads, at most this many rebuild guides at any moment


def valid_id(sample_id: str) -> bool:
    return bool(ID_PATTERN.fullmatch(sample_id or ""))


def media_type(name: str) -> str:
    return MEDIA_TYPES.get(name.rsplit(".", 1)[-1].lower(), "application/octet-stream")


class ImageSource:
    """The generation output as the review app reads it (metadata in memory, image bytes on demand)."""

    def __init__(self, data_uri: str, references: str | None = None, definitions: str | None = None) -> None:
        self.data_uri = data_uri
        self.reader = ShardReader(data_uri)
        self.spec = self.reader.spec
        self.rows = {str(r["id"]): r for r in self.reader.metadata.to_dict("records")}
        self._definitions = _read_definitions(definitions) if definitions else {}
        self._references = _reference_files(references, self.spec.class_names) if references else {}
        self.guides = BuiltCache(self._guide_png, GUIDE_CACHE_BYTES, GUIDE_BUILDS_AT_ONCE)

    def guide_png(self, sample_id: str) -> bytes:
        return self.guides.get(sample_id)

    def row(self, sample_id: str) -> dict | None:
        return self.rows.get(sample_id) if valid_id(sample_id) else None

    def generated(self, sample_id: str) -> tuple[bytes, str]:
        key = str(self.rows[sample_id]["image_key"])
        return self.reader.image_bytes(key), media_type(key)

    def has_guide(self, sample_id: str) -> bool:
        row = self.rows[sample_id]
        return row.get("mode") == "img2img" and bool(row.get("guide_foreground")) and bool(row.get("guide_background"))

    def _guide_png(self, sample_id: str) -> bytes:
        # Generation does not store guides: they are a pure function of (files, seed, size) — rebuild, don't copy.
        from pipelines.guides import make_guide

        row = self.rows[sample_id]
        image = make_guide(str(row["guide_foreground"]), str(row["guide_background"]), int(row["seed"]),
                           int(row.get("width") or row.get("image_width") or 512))
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue()

    def definition(self, sample_id: str) -> str:
        row = self.rows[sample_id]
        text = row.get("definition")
        if isinstance(text, str) and text.strip():
            return text.strip()
        y = int(row["y"])
        for key in (str(row.get("class_name", "")), str(row.get("imagenet_class", "")), str(y)):
            if key in self._definitions:
                return self._definitions[key]
        return ""

    def reference_count(self, y: int) -> int:
        return len(self._references.get(int(y), []))

    def reference(self, y: int, k: int) -> tuple[bytes, str]:
        path = self._references[int(y)][int(k)]
        fs, inner = filesystem(path)
        return fs.cat_file(inner), media_type(path)


class BuiltCache:
    """``build(key)`` results kept up to ``max_bytes`` (least recently used out first). Concurrent requests for
    one key wait for a single build; at most ``parallel`` builds run at once, whatever the keys."""

    def __init__(self, build: Callable[[str], bytes], max_bytes: int, parallel: int) -> None:
        self._build, self.max_bytes = build, max_bytes
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self._pending: dict[str, threading.Lock] = {}
        self._slots = threading.BoundedSemaphore(parallel)
        self.builds = 0  # how many times build ran (tests, and a hint when sizing max_bytes)

    def _cached(self, key: str) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def get(self, key: str) -> bytes:
        data = self._cached(key)
        if data is not None:
            return data
        with self._lock:
            key_lock = self._pending.setdefault(key, threading.Lock())
        with key_lock:
            data = self._cached(key)  # built while this request waited
            if data is not None:
                return data
            try:
                with self._slots:
                    data = self._build(key)
                with self._lock:
                    self.builds += 1
                    if len(data) <= self.max_bytes:
                        self._items[key] = data
                        self._size += len(data)
                        while self._size > self.max_bytes:
                            self._size -= len(self._items.popitem(last=False)[1])
            finally:
                with self._lock:
                    self._pending.pop(key, None)
            return data


def _read_definitions(path: str) -> dict[str, str]:
    fs, inner = filesystem(path)
    if not fs.exists(inner):
        raise FFRError(f"definitions file {path!r} does not exist")
    try:
        data = json.loads(fs.cat_file(inner))
    except json.JSONDecodeError as e:
        raise FFRError(f"definitions file {path!r} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise FFRError(f"definitions file {path!r} must map class name or index to a definition")
    return {str(k): str(v) for k, v in data.items()}


def _reference_files(folder: str, class_names: tuple[str, ...]) -> dict[int, list[str]]:
    """``folder/<class name or class index>/*.{jpg,png,...}`` → the first four files per class, sorted."""
    fs, inner = filesystem(folder)
    if not fs.isdir(inner):
        raise FFRError(f"reference folder {folder!r} does not exist")
    subfolders = {str(p).rstrip("/").rsplit("/", 1)[-1]: p for p in fs.ls(inner, detail=False) if fs.isdir(p)}
    out: dict[int, list[str]] = {}
    for y, name in enumerate(class_names):
        sub = subfolders.get(name) or subfolders.get(str(y))
        if sub is None:
            continue
        files = sorted(str(p) for p in fs.ls(sub, detail=False)
                       if str(p).rsplit(".", 1)[-1].lower() in MEDIA_TYPES)[:MAX_REFERENCES]
        prefix = "s3://" if folder.startswith("s3://") else ""
        out[y] = [f"{prefix}{p}" if prefix and not p.startswith(prefix) else p for p in files]
    return out
