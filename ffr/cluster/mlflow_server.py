"""Start the MLflow tracking server on the Ray head, reachable on the private network only.

    python -m ffr.cluster.mlflow_server --artifacts-destination s3://BUCKET/mlflow-artifacts

cluster.yaml runs this after ``ray start --head``. Runs and params go to a SQLite file on the head's disk
(``--backend-store-uri`` takes a Postgres URI instead, best given as the MLFLOW_BACKEND_STORE_URI variable so its
password stays out of cluster.yaml); artifacts are proxied to S3 with the head's instance-profile credentials, so
workers need only the tracking URI. The server binds to the head's private address (``--host`` may name loopback
or another private address; 0.0.0.0 and public addresses are refused), and MLflow's own host check admits only
localhost and private addresses. The server is detached and outlives this command; its log is ``--log``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ffr.cluster.network import check_bind_host, private_address
from ffr.errors import FFRError

DEFAULT_HOME = "~/mlflow"


def server_command(host: str, port: int, backend_store_uri: str | None, artifacts_destination: str,
                   workers: int = 2) -> list[str]:
    """The ``mlflow server`` command line; ``backend_store_uri=None`` leaves it to MLFLOW_BACKEND_STORE_URI."""
    command = [sys.executable, "-m", "mlflow", "server", "--host", check_bind_host(host), "--port", str(port),
               "--artifacts-destination", artifacts_destination, "--workers", str(workers)]
    if backend_store_uri:
        command += ["--backend-store-uri", backend_store_uri]
    return command


# No proxies: the server is on this host's own private network, and a proxy from the environment would miss it.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _healthy(url: str) -> bool:
    try:
        with _OPENER.open(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def wait_healthy(url: str, process: subprocess.Popen, timeout_s: float, log: Path) -> None:
    """Poll ``url``/health until it answers 200; raise FFRError (with the log's last line) if the server dies."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
            raise FFRError(f"mlflow server exited with code {process.returncode}: {' '.join(tail) or 'no output'}")
        if _healthy(url):
            return
        time.sleep(0.5)
    raise FFRError(f"mlflow server at {url} did not answer /health within {timeout_s:.0f}s; see {log}")


def start(host: str | None, port: int, backend_store_uri: str | None, artifacts_destination: str, log: Path,
          timeout_s: float = 120.0, workers: int = 2) -> tuple[str, int | None]:
    """Start the detached server and wait until it is healthy.

    Returns (tracking URI, process group id), or (URI, None) when a server already answers there.
    """
    host = check_bind_host(host) if host else private_address()
    url = f"http://{host}:{port}"
    if _healthy(url):  # `ray up` reruns the start commands; a second server would only fail on the port
        return url, None
    command = server_command(host, port, backend_store_uri, artifacts_destination, workers)
    # MLflow's background job runner (GenAI evaluation jobs) forks several consumers; experiment tracking
    # does not use it, and the head's CPUs belong to the GCS and the job drivers.
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        # A new session: the server must survive the ssh/docker-exec shell that ran this command, and the whole
        # group (uvicorn workers included) stops with one `kill -- -PID`.
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   env=env, start_new_session=True)
    try:
        wait_healthy(url, process, timeout_s, log)
    except FFRError:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        raise
    return url, process.pid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ffr.cluster.mlflow_server", description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts-destination", required=True,
                        help="where run artifacts go, e.g. s3://BUCKET/mlflow-artifacts (a local path works too)")
    parser.add_argument("--host", default=None, help="bind address (default: this host's private address)")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--backend-store-uri", default=None,
                        help=f"default: $MLFLOW_BACKEND_STORE_URI, else sqlite:///{DEFAULT_HOME}/mlflow.db")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--log", default=f"{DEFAULT_HOME}/server.log")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for /health")
    args = parser.parse_args(argv)
    backend = args.backend_store_uri
    if not backend and not os.environ.get("MLFLOW_BACKEND_STORE_URI"):
        home = Path(DEFAULT_HOME).expanduser()
        home.mkdir(parents=True, exist_ok=True)
        backend = f"sqlite:///{home / 'mlflow.db'}"
    try:
        url, pid = start(args.host, args.port, backend, args.artifacts_destination, Path(args.log).expanduser(),
                         args.timeout, args.workers)
    except FFRError as e:
        print(f"ffr.cluster.mlflow_server: error: {e}", file=sys.stderr)
        return 2
    if pid is None:
        print(f"MLflow tracking server: {url} (already running)")
    else:
        print(f"MLflow tracking server: {url} (stop it with: kill -- -{pid})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
