"""One way to reach storage: local paths and ``s3://`` URIs through fsspec (s3fs for S3).

Credentials and the endpoint come from the environment (``AWS_ACCESS_KEY_ID`` / instance role,
``AWS_ENDPOINT_URL`` or ``FFR_S3_ENDPOINT`` for S3-compatible stores such as MinIO or moto) and are never
put in configs, logs or MLflow params.
"""

from __future__ import annotations

import os
import posixpath
from functools import lru_cache

import fsspec


def is_remote(path: str) -> bool:
    return "://" in str(path) and not str(path).startswith("file://")


def s3_endpoint() -> str | None:
    return os.environ.get("FFR_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL") or None


@lru_cache(maxsize=8)
def _s3(endpoint: str | None):
    import s3fs

    kwargs = {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}
    return s3fs.S3FileSystem(**kwargs)


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


def write_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write to ``{path}.tmp`` and rename into place, so a killed writer never leaves a half file at ``path``."""
    tmp = f"{path}.tmp"
    with fs.open(tmp, "wb") as f:
        f.write(data)
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
