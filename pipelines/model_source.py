"""Where a model comes from: a local directory, a Hugging Face hub id, or an object-store prefix (``s3://...``).

Object-store models are copied to a local cache once per node, because ``from_pretrained`` reads local files.
Several Ray actors on one node often start at the same moment, so the copy is guarded by an exclusive lock file
and published by a completion marker written last: an actor either finds the marker (and the files it lists,
with matching sizes) or takes the lock and (re)copies. A copy interrupted by a kill leaves no marker, so the
next start redoes it. The cache directory is ``cache_dir``, else ``$FFR_MODEL_CACHE``, else
``~/.cache/ffr/models``. Credentials/endpoint come from the environment through :mod:`ffr.storage`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path

from ffr.errors import FFRError
from ffr.storage import filesystem, is_remote

MARKER = ".ffr_sync_complete.json"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def default_cache_dir() -> str:
    return os.environ.get("FFR_MODEL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "ffr", "models")


def resolve_model(source: str, cache_dir: str | None = None) -> str:
    """A name ``from_pretrained`` can load: a local directory (remote prefixes synced first) or a hub id.

    Raises FFRError for a local path that does not exist or a remote prefix that holds no files.
    """
    source = str(source).strip()
    if not source:
        raise FFRError("model source is empty; expected a local directory, a hub id or an s3:// prefix")
    if is_remote(source):
        return sync_remote(source, cache_dir)
    local = source[len("file://"):] if source.startswith("file://") else source
    local = os.path.expanduser(local)
    if os.path.isdir(local):
        return os.path.abspath(local)
    looks_like_path = local.startswith(("/", ".", "~")) or source.startswith("file://") or local.count("/") > 1
    if looks_like_path or not _HUB_ID.match(local):
        raise FFRError(f"model directory {source!r} does not exist; expected a local directory, a hub id "
                       "(org/name) or an s3:// prefix")
    return local  # a hub id: from_pretrained downloads it (or finds it in the HF cache when offline)


_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "DIFFUSERS_OFFLINE")
# What a saved model has at its top: a diffusers pipeline, a transformers / single diffusers model.
_MODEL_FILES = ("model_index.json", "config.json")


def hub_offline() -> str | None:
    """The variable that turns Hugging Face downloads off, when one does (HF_HUB_OFFLINE=1, ...)."""
    return next((v for v in _OFFLINE_VARIABLES
                 if os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")), None)


def check_hub_cached(repo_id: str) -> None:
    """Offline, a hub id must be in the local Hugging Face cache (huggingface_hub's, the one ``from_pretrained``
    reads): else one FFRError line here, on the driver, instead of every actor failing its load (and Ray
    retrying it) with a misleading "does not appear to have a file named model_index.json". Online, a model
    that is not cached is downloaded by ``from_pretrained``: nothing to check."""
    offline = hub_offline()
    if offline is None:
        return
    from huggingface_hub import constants, try_to_load_from_cache

    if any(isinstance(try_to_load_from_cache(repo_id, name), str) for name in _MODEL_FILES):
        return
    raise FFRError(f"model {repo_id!r} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and "
                   f"downloads are off ({offline}={os.environ[offline]}); download it where there is a network "
                   f"(huggingface-cli download {repo_id}), set HF_HOME to a cache that has it, or give a local "
                   "directory or an s3:// prefix")


def check_model_source(source: str) -> None:
    """FFRError unless the model can be found: a local directory exists, an s3:// prefix holds files (one
    listing; nothing is copied), or a hub id is in the local Hugging Face cache when downloads are off."""
    if is_remote(str(source).strip()):
        _remote_listing(str(source).strip())
        return
    found = resolve_model(source)
    if not os.path.isdir(found):
        check_hub_cached(found)


def _local_dir_for(source: str, cache_dir: str) -> Path:
    # The remote URI decides the cache folder: readable tail + hash so two prefixes never share a folder.
    tail = re.sub(r"[^\w.-]+", "_", source.rstrip("/").rsplit("/", 1)[-1])[:60] or "model"
    digest = hashlib.sha256(source.rstrip("/").encode()).hexdigest()[:16]
    return Path(cache_dir) / f"{tail}-{digest}"


def _remote_listing(source: str) -> tuple[object, dict[str, str], dict[str, int]]:
    """(fs, {relative path: remote path}, {relative path: size}) of every file under the prefix."""
    fs, root = filesystem(source)
    root = root.rstrip("/")
    try:
        found = fs.find(root, detail=True)
    except FileNotFoundError:
        found = {}
    remote, sizes = {}, {}
    for key, info in found.items():
        if info.get("type", "file") != "file" or not key.startswith(root + "/"):
            continue
        rel = key[len(root) + 1:]
        remote[rel], sizes[rel] = key, int(info.get("size") or 0)
    if not remote:
        raise FFRError(f"model prefix {source!r} holds no files; expected a saved model (model_index.json or "
                       "config.json) under it")
    return fs, remote, sizes


def _complete(target: Path, sizes: dict[str, int]) -> bool:
    marker = target / MARKER
    if not marker.exists():
        return False
    try:
        recorded = json.loads(marker.read_text())["files"]
    except (ValueError, KeyError):
        return False
    # A changed remote listing (re-uploaded model) invalidates the cache; sizes also catch truncated files.
    return recorded == sizes and all((target / rel).is_file() and (target / rel).stat().st_size == size
                                     for rel, size in sizes.items())


def sync_remote(source: str, cache_dir: str | None = None) -> str:
    """Copy every file under a remote prefix into the local cache once per node; return the local directory."""
    cache_dir = cache_dir or default_cache_dir()
    os.makedirs(cache_dir, exist_ok=True)
    target = _local_dir_for(source, cache_dir)
    fs, remote, sizes = _remote_listing(source)
    if _complete(target, sizes):
        return str(target)
    with open(str(target) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # blocks while another process on this node copies the same model
        try:
            if _complete(target, sizes):  # another process finished while we waited
                return str(target)
            partial = Path(f"{target}.partial-{os.getpid()}-{time.monotonic_ns()}")
            shutil.rmtree(partial, ignore_errors=True)
            rels = sorted(remote)
            lpaths = [str(partial / rel) for rel in rels]
            for p in lpaths:
                os.makedirs(os.path.dirname(p), exist_ok=True)
            fs.get([remote[r] for r in rels], lpaths)  # s3fs fetches a list of keys concurrently
            (partial / MARKER).write_text(json.dumps({"source": source, "files": sizes}, sort_keys=True))
            shutil.rmtree(target, ignore_errors=True)
            os.replace(partial, target)  # the folder appears complete, marker included, in one rename
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return str(target)
