"""One way to reach storage: local paths and ``s3://`` URIs through fsspec (s3fs for S3).

Credentials and the endpoint come from the environment (``AWS_ACCESS_KEY_ID`` / instance role,
``AWS_ENDPOINT_URL`` or ``FFR_S3_ENDPOINT`` for S3-compatible stores such as MinIO or moto) and are never
put in configs, logs or MLflow params.
"""

from __future__ import annotations

import errno
import os
import posixpath
import threading
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import fsspec

from ffr.errors import FFRError
from ffr.options import Options, looks_like_path, path_options

_BUCKETS_SEEN: set[tuple[int, str]] = set()  # (filesystem id, bucket) known to exist: checked once per process


def is_remote(path: str) -> bool:
    return "://" in str(path) and not str(path).startswith("file://")


def absolute(path: str | None, base: str | None = None) -> str | None:
    """A path a user gave, resolved against ``base`` (default: this process's working directory, i.e. where
    the command was started). URIs (``s3://...``) are returned as they are, ``~`` is expanded, ``file://`` is
    kept as a prefix; None and "" stay as they are.

    Called once, on the driver, before Ray starts: Ray Train workers, Tune trials and Ray Data actors run in
    other working directories, where a relative path names another place (or nothing)."""
    if path is None or path == "" or not isinstance(path, str):
        return path
    if is_remote(path):
        return path
    scheme = "file://" if path.startswith("file://") else ""
    local = os.path.expanduser(path[len(scheme):])
    return scheme + os.path.normpath(os.path.join(base or os.getcwd(), local))


def _resolve_one(value: Any, marker: dict, base: str | None) -> Any:
    if not isinstance(value, str) or not value or value in marker.get("keep", ()):
        return value
    here = os.path.join(base or os.getcwd(), os.path.expanduser(value))
    if any(value.startswith(p) for p in marker.get("keep_prefixes", ())) and not os.path.exists(here):
        return value
    if marker.get("model") and not (os.path.exists(here) or looks_like_path(value)):
        return value  # a hub id
    return absolute(value, base)


def resolve_option_paths(cls: type[Options], values: Mapping[str, Any] | None,
                         base: str | None = None) -> dict[str, Any]:
    """``values`` (a raw options mapping) with every path option of ``cls`` made absolute (see ``ffr.options.PathField``);
    other keys, and values that are not mappings, are returned unchanged (validation says what is wrong)."""
    if not isinstance(values, Mapping):
        return values  # type: ignore[return-value]
    out = dict(values)
    for name, marker in path_options(cls).items():
        value = out.get(name)
        if isinstance(value, (list, tuple)):
            out[name] = [_resolve_one(v, marker, base) for v in value]
        elif value is not None:
            out[name] = _resolve_one(value, marker, base)
    return out


def s3_endpoint() -> str | None:
    return os.environ.get("FFR_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL") or None


# Transient object-store errors (connection resets, timeouts, 5xx, throttling) are retried by botocore's
# "standard" mode: at most $FFR_S3_MAX_ATTEMPTS tries per request, exponential backoff with jitter capped at 20 s per
# wait, then s3fs's own few retries. Every retry is counted below.
# ($FFR_S3_MAX_ATTEMPTS, default 6, is read when a filesystem for an endpoint is first made.)
_retries = 0
_retries_lock = threading.Lock()


def storage_retries() -> int:
    """Failed object-store attempts that were retried (or given up on) in this process so far."""
    return _retries


def _count_retry(caught_exception=None, response=None, **_) -> None:
    global _retries
    status = (response[1].get("ResponseMetadata", {}).get("HTTPStatusCode", 200)
              if isinstance(response, tuple) and len(response) > 1 and isinstance(response[1], dict) else 200)
    if caught_exception is not None or status >= 500 or status == 429:
        with _retries_lock:
            _retries += 1


@lru_cache(maxsize=8)
def _s3(endpoint: str | None):
    import s3fs

    kwargs = {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}
    attempts = int(os.environ.get("FFR_S3_MAX_ATTEMPTS", "6"))
    fs = s3fs.S3FileSystem(config_kwargs={"retries": {"max_attempts": attempts, "mode": "standard"}}, **kwargs)
    fs.connect()  # the botocore client now, so the retry counter hooks into its events
    fs.s3.meta.events.register("needs-retry.s3", _count_retry)
    _no_silent_reconnect(fs.s3)
    return fs


def _no_silent_reconnect(client) -> None:
    """aiohttp resends an idempotent request once, immediately and invisibly, when a reused keep-alive
    connection was reset. Turned off for our S3 clients so every retry goes through botocore's bounded
    backoff, where it is counted. (aiobotocore 3.x keeps its aiohttp sessions in ``_sessions``; if that
    ever changes, retries still happen, only some go uncounted.)"""
    http = getattr(getattr(client, "_endpoint", None), "http_session", None)
    make = getattr(http, "_get_session", None)
    if make is None:
        return

    async def get_session(proxy_url):
        session = await make(proxy_url)
        session._retry_connection = False
        return session

    http._get_session = get_session


def filesystem(path: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path within it) for a local path or a URI; s3:// keeps 'bucket/key' as the path."""
    path = str(path)
    if path.startswith("s3://"):
        return _s3(s3_endpoint()), path[len("s3://"):]
    if is_remote(path):
        fs, inner = fsspec.core.url_to_fs(path)
        return fs, inner
    if path.startswith("file://"):
        path = path[len("file://"):]
    return fsspec.filesystem("file"), os.path.abspath(path)


def is_object_store(fs: fsspec.AbstractFileSystem) -> bool:
    """Buckets and keys rather than folders (s3, gcs, azure): folders exist implicitly, buckets do not."""
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    return any(p in ("s3", "s3a", "gs", "gcs", "abfs", "az", "adl") for p in protocols)


def require_bucket(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """FFRError naming the bucket when ``path``'s bucket does not exist (object stores only).

    Never creates it: ``s3fs.makedirs`` would silently create a bucket for a typo in its name."""
    if not is_object_store(fs):
        return
    bucket = path.strip("/").split("/", 1)[0]
    if (id(fs), bucket) in _BUCKETS_SEEN:
        return
    exists = _bucket_exists(fs, bucket)
    if not exists:
        raise FFRError(f"bucket {bucket!r} does not exist (in {path!r}); create it first or fix the name — "
                       "ffr never creates buckets")
    _BUCKETS_SEEN.add((id(fs), bucket))


def _bucket_exists(fs: fsspec.AbstractFileSystem, bucket: str) -> bool:
    """HEAD the bucket: 404 means missing. Not ``fs.exists``: s3fs answers False for *any* failed probe, so an
    outage or a role without s3:ListBucket would read as a missing bucket."""
    call = getattr(fs, "call_s3", None)
    if call is None:
        return fs.exists(bucket)
    try:
        call("head_bucket", Bucket=bucket)
    except FileNotFoundError:
        return False
    except PermissionError:  # a role that may write a prefix but not HEAD the bucket: its writes will tell
        return True
    return True


def ensure_dir(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """Make sure files can be written under ``path``: a local folder is created (with parents); on an object
    store the bucket must already exist and nothing is created (key prefixes need no folders)."""
    if is_object_store(fs):
        require_bucket(fs, path)
        return
    fs.makedirs(path, exist_ok=True)


def no_space(e: OSError) -> bool:
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


def write_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write to ``{path}.tmp`` and rename into place, so a killed writer never leaves a half file at ``path``.

    A full disk is a user-facing condition, not a bug: the partial temp file is removed and the error is one
    line (what was already renamed into place stays valid, so a rerun with space resumes)."""
    tmp = f"{path}.tmp"
    try:
        with fs.open(tmp, "wb") as f:
            f.write(data)
    except OSError as e:
        if not no_space(e):
            raise
        try:
            fs.rm(tmp)
        except OSError:
            pass
        raise FFRError(f"no space left on the device writing {path!r} ({len(data)} bytes); free space or "
                       "choose another output, then rerun the same command to resume") from None
    fs.mv(tmp, path)


def join(base: str, *parts: str) -> str:
    """Join path parts the same way for local paths and URIs."""
    if is_remote(base):
        return posixpath.join(base, *parts)
    return os.path.join(base, *parts)


def pyarrow_filesystem(path: str):
    """(pyarrow FileSystem, path) for Ray Data / Ray Train, wrapping the fsspec filesystem."""
    import pyarrow.fs as pafs

    fs, inner = filesystem(path)
    if not is_remote(path):
        return pafs.LocalFileSystem(), inner
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), inner
