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
    """``values`` (a raw options mapping) with every path option of ``cls`` made absolute (see
    ``ffr.options.PathField``); other keys, and values that are not mappings, are returned unchanged (validation
    says what is wrong)."""
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


# Error codes S3 (and MinIO, Ceph, moto with auth on) answer for credentials that are not valid at all; an
# AccessDenied means they are valid but may not do that (e.g. a role without s3:ListAllMyBuckets).
_BAD_CREDENTIALS = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
                    "TokenRefreshRequired", "InvalidClientTokenId", "AuthorizationHeaderMalformed",
                    "InvalidSecurity", "UnrecognizedClientException")
_SOURCES = {"env": "the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)",
            "shared-credentials-file": "the shared credentials file (~/.aws/credentials or "
                                       "$AWS_SHARED_CREDENTIALS_FILE)",
            "config-file": "the AWS config file (~/.aws/config or $AWS_CONFIG_FILE)",
            "iam-role": "the instance role (EC2 instance metadata)", "container-role": "the container role (ECS)",
            "assume-role": "an assumed role (AWS config profile)", "sso": "AWS SSO",
            "assume-role-with-web-identity": "a web identity role ($AWS_WEB_IDENTITY_TOKEN_FILE)"}
_ACCESS_CHECKED: set[tuple[str | None, str]] = set()  # (endpoint, access key id) that passed, once per process


def _endpoint_name(endpoint: str | None) -> str:
    if endpoint:
        var = "FFR_S3_ENDPOINT" if os.environ.get("FFR_S3_ENDPOINT") == endpoint else \
            "AWS_ENDPOINT_URL" if os.environ.get("AWS_ENDPOINT_URL") == endpoint else "s3_endpoint"
        return f"endpoint {endpoint} (from {var})"
    return "AWS S3 (no FFR_S3_ENDPOINT / AWS_ENDPOINT_URL set)"


def check_s3_access(endpoint: str | None) -> None:
    """One line, fast, when S3 cannot be used at all: no credentials anywhere, credentials the endpoint refuses,
    or an endpoint that does not answer. One small request (ListBuckets) with at most
    ``$FFR_S3_CHECK_ATTEMPTS`` (default 3) attempts and short timeouts, once per process and endpoint, before
    any other S3 request: otherwise the first real request would wait through every slow retry (tens of
    seconds) before failing, or end in a botocore traceback."""
    import botocore.config
    import botocore.exceptions
    import botocore.session

    where = _endpoint_name(endpoint)
    session = botocore.session.get_session()
    try:
        credentials = session.get_credentials()
    except botocore.exceptions.BotoCoreError as e:  # e.g. a profile that does not exist
        raise FFRError(f"S3 credentials for {where} could not be read: {e}") from None
    if credentials is None:
        raise FFRError(f"no S3 credentials found for {where}: looked in the environment (AWS_ACCESS_KEY_ID / "
                       "AWS_SECRET_ACCESS_KEY), AWS_PROFILE and ~/.aws/credentials, ~/.aws/config, container and "
                       "instance roles; set one of them (keys never go in configs)")
    source = _SOURCES.get(credentials.method, credentials.method or "an unknown source")
    key = (endpoint, credentials.access_key)
    if key in _ACCESS_CHECKED:
        return
    attempts = max(1, int(os.environ.get("FFR_S3_CHECK_ATTEMPTS", "3")))
    config = botocore.config.Config(retries={"total_max_attempts": attempts, "mode": "standard"}, connect_timeout=3,
                                    read_timeout=10)
    client = session.create_client("s3", endpoint_url=endpoint, config=config,
                                   region_name=os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")
    sent = [0]
    client.meta.events.register("before-send.s3", lambda **_: sent.__setitem__(0, sent[0] + 1))
    try:
        client.list_buckets()
    except botocore.exceptions.ClientError as e:
        error = e.response.get("Error", {})
        if error.get("Code") in _BAD_CREDENTIALS:
            message = str(error.get("Message") or "").strip().splitlines()[0:1]
            raise FFRError(f"S3 credentials from {source} were refused by {where}: {error.get('Code')}"
                           f"{': ' + message[0] if message else ''}; fix or replace them") from None
    except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError,
            botocore.exceptions.ReadTimeoutError, botocore.exceptions.ConnectionClosedError) as e:
        raise FFRError(f"object storage {where} did not answer: {sent[0]} attempt(s), {max(0, sent[0] - 1)} of them "
                       f"retries ({type(e).__name__}); check the endpoint and the network") from None
    finally:
        client.close()
    _ACCESS_CHECKED.add(key)


@lru_cache(maxsize=8)
def _s3(endpoint: str | None):
    import s3fs

    check_s3_access(endpoint)  # one line, before s3fs's long retries could start
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
