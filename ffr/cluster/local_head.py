"""A throwaway single-node Ray head on 127.0.0.1, to rehearse ``ray job submit`` without a cluster.

    python -m ffr.cluster.local_head --num-cpus 4      # prints the address and the client's export lines

It starts ``ray start --head --block`` with the same security settings as cluster.yaml (token auth on, dashboard
on loopback), so it coexists with other Ray instances on the machine:

* every port Ray would take at a fixed default, and the worker port range (Ray's default 10002-19999 is shared by
  every instance), come from ports found free; the temp dir is its own;
* its GCS address is exported as ``RAY_ADDRESS`` to everything it starts, so a job's ``ray.init()`` (and any
  process the job spawns) joins this head and never another instance's ``/tmp/ray`` session;
* S3 keys found in the launching environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
  ``AWS_SESSION_TOKEN``) move into a mode-600 credentials file in its temp dir, named by
  ``AWS_SHARED_CREDENTIALS_FILE``, the way a node holds them in ``~/.aws/credentials``: Ray copies key variables
  into runtime envs, which ``ray list actors --detail`` shows, a credentials file it never reads.

Stopping signals its process group only (``ray stop`` would stop every Ray instance on the machine). The tests
use :func:`local_head` to prove that the documented submit commands run for real.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ffr.errors import FFRError

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
# Every port `ray start --head` would otherwise take at its fixed default (6379, 8265, 10001, 52365, ...).
_PORT_FLAGS = ("--port", "--dashboard-port", "--ray-client-server-port", "--dashboard-agent-listen-port",
               "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port",
               "--node-manager-port", "--object-manager-port")


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


# Worker ports per head: one per worker process (Tune trials, Train workers, Data actors, job drivers).
WORKER_PORTS = 200
CREDENTIAL_VARS = {"AWS_ACCESS_KEY_ID": "aws_access_key_id", "AWS_SECRET_ACCESS_KEY": "aws_secret_access_key",
                   "AWS_SESSION_TOKEN": "aws_session_token", "AWS_SECURITY_TOKEN": "aws_security_token"}


def _free_port_range(n: int, low: int = 20000, high: int = 60000, attempts: int = 100,
                     avoid: Collection[int] = ()) -> tuple[int, int]:
    """(first, last) of ``n`` consecutive ports that are all free right now, outside Ray's default worker range
    and holding none of ``avoid`` (the head's own ports: free now too, so only this check keeps them out; Ray
    refuses to start when a component's port lies in the worker range)."""
    for _ in range(attempts):
        first = random.randrange(low, high - n)
        if any(first <= port < first + n for port in avoid):
            continue
        sockets = []
        try:
            for port in range(first, first + n):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return first, first + n - 1
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise FFRError(f"no {n} consecutive free ports between {low} and {high}; too many Ray instances running?")


def move_keys_to_credentials_file(env: dict[str, str], path: Path) -> bool:
    """Move AWS key variables out of ``env`` into a ``[default]`` credentials file at ``path`` (mode 600)."""
    found = {CREDENTIAL_VARS[k]: env.pop(k) for k in list(env) if k in CREDENTIAL_VARS}
    if not found:
        return False
    path.touch(mode=0o600)
    path.write_text("[default]\n" + "".join(f"{k} = {v}\n" for k, v in found.items()))
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(path)
    env.pop("AWS_PROFILE", None)  # the file has only [default]
    return True


def venv_bin(name: str) -> str:
    """``name`` from this interpreter's environment (the venv's ``ray``, ``ffr``), else from PATH."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else (shutil.which(name) or name)


@dataclass
class LocalHead:
    address: str  # the Jobs API, e.g. http://127.0.0.1:PORT
    token_path: Path  # the cluster's auth token, readable by this user only
    temp_dir: Path
    process: subprocess.Popen
    gcs_address: str = ""  # 127.0.0.1:PORT, exported as RAY_ADDRESS to every process the head starts

    def client_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for ``ray job ...`` clients: token auth on, the token read from ``token_path``."""
        env = dict(os.environ if base is None else base)
        env.pop("RAY_AUTH_TOKEN", None)
        env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_path), "RAY_ADDRESS": self.address})
        return env

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM the head's process group, SIGKILL it after ``timeout_s``; remove the temp dir."""
        if self.process.poll() is None:
            _signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                pass
        # Children (GCS, raylet, dashboard, workers) share the group; none may outlive the head.
        _signal_group(self.process.pid, signal.SIGKILL)
        self.process.wait()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _wait_until_serving(head: LocalHead, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if head.process.poll() is not None:
            tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
            raise FFRError(f"ray start --head exited with code {head.process.returncode}: {tail}")
        try:
            with _OPENER.open(f"{head.address}/api/version", timeout=2):
                return
        except urllib.error.HTTPError:  # 401 without a token: the dashboard is up and enforcing auth
            return
        except OSError:
            time.sleep(0.5)
    raise FFRError(f"local Ray head at {head.address} did not serve within {timeout_s:.0f}s; see {log}")


def start_local_head(num_cpus: int = 4, env: Mapping[str, str] | None = None, timeout_s: float = 120.0) -> LocalHead:
    """Start the head and wait until its Jobs API answers. ``env`` is added to this process's environment."""
    # Unix socket paths under the temp dir must stay short (108 bytes), hence /tmp and a short prefix.
    temp_dir = Path(tempfile.mkdtemp(prefix="ffrray-", dir="/tmp"))
    token_path = temp_dir / "auth_token"
    token_path.write_text(secrets.token_hex(32))
    token_path.chmod(0o600)
    ports = dict(zip(_PORT_FLAGS, _free_ports(len(_PORT_FLAGS))))
    first_worker_port, last_worker_port = _free_port_range(WORKER_PORTS, avoid=ports.values())
    head_env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    head_env.update(env or {})
    move_keys_to_credentials_file(head_env, temp_dir / "aws_credentials")
    head_env.update({
        "RAY_ADDRESS": f"127.0.0.1:{ports['--port']}",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token_path),
        "RAY_USAGE_STATS_ENABLED": "0",
        # SIGTERM would otherwise wait 30 s to drain the node (meant for Serve replicas on Kubernetes).
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
        # Job entrypoints (`ffr ...`, `python ...`) resolve to this interpreter's environment.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{head_env.get('PATH', '')}",
    })
    command = [venv_bin("ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
               "--dashboard-host=127.0.0.1", f"--num-cpus={num_cpus}", "--num-gpus=0", f"--temp-dir={temp_dir}"]
    command += [f"{flag}={port}" for flag, port in ports.items()]
    command += [f"--min-worker-port={first_worker_port}", f"--max-worker-port={last_worker_port}"]
    log = temp_dir / "head.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   env=head_env, start_new_session=True)
    head = LocalHead(f"http://127.0.0.1:{ports['--dashboard-port']}", token_path, temp_dir, process,
                     head_env["RAY_ADDRESS"])
    try:
        _wait_until_serving(head, timeout_s, log)
    except BaseException:
        head.stop()
        raise
    return head


@contextmanager
def local_head(num_cpus: int = 4, env: Mapping[str, str] | None = None, timeout_s: float = 120.0
               ) -> Iterator[LocalHead]:
    """``with local_head() as head:`` a started head, stopped (process group and temp dir) on exit."""
    head = start_local_head(num_cpus, env, timeout_s)
    try:
        yield head
    finally:
        head.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ffr.cluster.local_head", description=__doc__.splitlines()[0])
    parser.add_argument("--num-cpus", type=int, default=4)
    args = parser.parse_args(argv)
    # `kill PID` must stop the head too, not only Ctrl-C: turn SIGTERM into the same clean exit.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        head = start_local_head(args.num_cpus)
    except FFRError as e:
        print(f"ffr.cluster.local_head: error: {e}", file=sys.stderr)
        return 2
    print(f"Local Ray head up. In another shell:\n  export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={head.token_path} "
          f"RAY_ADDRESS={head.address}\nCtrl-C stops it.", flush=True)
    try:
        head.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        # Keep a second Ctrl-C / SIGTERM from interrupting the teardown itself.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        head.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
