"""Session-wide real components: a moto S3 server on 127.0.0.1 and one local Ray cluster.

Both are started once per test session (CI has 2 cores): tests that need S3 take ``s3_bucket`` (a fresh
bucket, reached through s3fs), tests that need Ray take ``ray_cluster``. The S3 endpoint and dummy
credentials go in the environment *before* Ray starts so every Ray worker inherits them.
"""

from __future__ import annotations

import os
import socket
import tempfile
import uuid

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")
# Ray Train's controller polls its workers every 2 s, so each tiny test fit idled ~3 s after its last epoch
# (measured: 5.7 s from the loop's end to fit()'s return, 2.5 s at 0.25). Set before any Ray starts, so every
# controller (session cluster, `ray start` heads, job drivers) inherits it.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    """A real S3 API (moto's server) on loopback; s3fs and boto talk HTTP to it."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    _MOTO.append(server)
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update({
        "AWS_ACCESS_KEY_ID": "testing-key-id",
        "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "FFR_S3_ENDPOINT": endpoint,
    })
    yield endpoint
    server.stop()


_MOTO: list = []  # the session's moto server, for s3_requests


@pytest.fixture()
def s3_requests(s3_endpoint) -> list[tuple[str, str, str, str | None]]:
    """Every request the moto server answers during the test, from any process (driver, Ray workers):
    (method, path, query string, Range header). For tests that count listings and reads."""
    server = _MOTO[0]._server  # werkzeug's server looks its WSGI app up per request
    app, seen = server.app, []

    def recording(environ, start_response):
        seen.append((environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", ""),
                     environ.get("HTTP_RANGE")))
        return app(environ, start_response)

    server.app = recording
    yield seen
    server.app = app


@pytest.fixture()
def s3_bucket(s3_endpoint) -> str:
    """A fresh, empty bucket; returns its s3:// URI."""
    from ffr.storage import filesystem

    name = f"test-{uuid.uuid4().hex[:12]}"
    fs, _ = filesystem(f"s3://{name}")
    fs.mkdir(name)
    fs.invalidate_cache()
    return f"s3://{name}"


@pytest.fixture(scope="session")
def ray_cluster(s3_endpoint):
    """One local Ray cluster per session, with generous logical CPUs so Train/Tune/Data never starve."""
    import ray

    # address="local" and an own temp dir: never join another Ray instance on this machine (a `ray start` of a
    # developer's, or another session's), which ray.init() with no address would do.
    ray.init(address="local", _temp_dir=tempfile.mkdtemp(prefix="ffr-test-ray-"), num_cpus=8,
             include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"FFR_S3_ENDPOINT": s3_endpoint}})
    yield ray
    ray.shutdown()
