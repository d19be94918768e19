"""`ray job submit` against a real Ray head on 127.0.0.1, exactly as docs/cluster.md tells users to submit.

The head is started by ffr.cluster.local_head (token auth on, dashboard on loopback, its own temp dir and ports,
so it does not touch the session's `ray_cluster`), the job is the documented `ffr generate` entry point writing
to the moto S3 server, and the runtime env comes from configs/runtime-env.yaml via ffr.cluster.runtime_env.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from ffr.cluster.local_head import local_head, venv_bin
from ffr.cluster.runtime_env import build_runtime_env
from ffr.secrets import leaked_secrets
from ffr.storage import filesystem

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
# Configured on the head like a real deployment would have them; none may surface in job output.
MLFLOW_TOKEN = "mlflow-token-" + uuid.uuid4().hex
# cluster.yaml exports the tracking URI before `ray start` on every node; jobs must inherit it from there.
NODE_TRACKING_URI = "http://10.0.0.10:5000"


@pytest.fixture(scope="module")
def head(s3_endpoint):
    # s3_endpoint put the moto credentials in os.environ: the head (and so the job) inherits them, the way
    # nodes get credentials from their environment or instance role rather than from the runtime env.
    with local_head(num_cpus=4, env={"MLFLOW_TRACKING_TOKEN": MLFLOW_TOKEN,
                                     "MLFLOW_TRACKING_URI": NODE_TRACKING_URI}) as h:
        yield h


def _ray_job(head, verb: str, *args: str, timeout: float = 300, env: dict | None = None
             ) -> subprocess.CompletedProcess:
    """``ray job VERB --address HEAD ARGS...`` (options before the entrypoint's ``--``)."""
    command = [venv_bin("ray"), "job", verb, "--address", head.address, *args]
    return subprocess.run(command, cwd=REPO, env=env or head.client_env(), capture_output=True, text=True,
                          timeout=timeout)


def _secrets(head) -> dict[str, str]:
    import os

    return {"AWS_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"], "MLFLOW_TRACKING_TOKEN": MLFLOW_TOKEN,
            "RAY_AUTH_TOKEN": head.token_path.read_text().strip()}


def test_submit_without_the_cluster_token_is_refused(head):
    env = head.client_env()
    env.pop("RAY_AUTH_TOKEN_PATH")
    env["RAY_AUTH_TOKEN"] = "0" * 64  # a token, but not this cluster's
    result = _ray_job(head, "submit", "--", "python", "-c", "print('should not run')", env=env, timeout=120)
    assert result.returncode != 0
    assert "Unauthorized" in result.stdout + result.stderr or "AuthenticationError" in result.stdout + result.stderr


def test_job_shell_sees_the_nodes_tracking_uri(head):
    # docs/cluster.md passes the head's MLflow URI to `ffr sweep` this way: single quotes locally, so the job's
    # shell on the cluster expands it from the environment the node started Ray with.
    result = _ray_job(head, "submit", "--", "bash", "-c", "echo tracking=$MLFLOW_TRACKING_URI", timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert f"tracking={NODE_TRACKING_URI}" in result.stdout


@pytest.fixture(scope="module")
def generate_job(head, s3_endpoint):
    from moto.server import ThreadedMotoServer  # noqa: F401  (the s3_endpoint fixture runs it)

    bucket = f"job-{uuid.uuid4().hex[:12]}"
    fs, _ = filesystem(f"s3://{bucket}")
    fs.mkdir(bucket)
    output = f"s3://{bucket}/colored-digits"
    # The submitting shell knows where S3 is; the runtime env carries that (and refuses credentials).
    runtime_env = build_runtime_env(REPO / "configs" / "runtime-env.yaml",
                                    environ={"FFR_S3_ENDPOINT": s3_endpoint, "AWS_ENDPOINT_URL": s3_endpoint})
    submission_id = f"ffr-generate-{uuid.uuid4().hex[:8]}"
    submit = _ray_job(head, "submit", "--submission-id", submission_id, "--working-dir", str(REPO),
                      "--runtime-env-json", json.dumps(runtime_env), "--",
                      "ffr", "generate", "--config", "configs/generate-colored-digits.yaml", f"output={output}",
                      "budget.per_group=2", "shard_size=8", "ray.min_actors=1", "ray.max_actors=1")
    logs = _ray_job(head, "logs", submission_id, timeout=60)
    status = _ray_job(head, "status", submission_id, timeout=60)
    return {"submit": submit, "logs": logs, "status": status, "output": output}


def test_generate_job_succeeds_and_writes_to_s3(generate_job):
    submit, logs = generate_job["submit"], generate_job["logs"]
    assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
    assert "succeeded" in submit.stdout + submit.stderr
    assert logs.returncode == 0, logs.stderr[-2000:]
    # The job's own stdout (generate's closing summary) comes back through `ray job logs`.
    assert "every group has its target" in logs.stdout and f"output: {generate_job['output']}" in logs.stdout
    assert "succeeded" in (generate_job["status"].stdout + generate_job["status"].stderr).lower()
    fs, root = filesystem(generate_job["output"])
    fs.invalidate_cache()
    names = {p.rsplit("/", 1)[-1] for p in fs.find(root)}
    assert {"config.json", "summary.json"} <= names
    assert any(n.endswith(".tar") or n.endswith(".parquet") for n in names), sorted(names)


def test_generate_job_output_and_logs_hold_no_secret(head, generate_job):
    fs, root = filesystem(generate_job["output"])
    dumped_config = fs.cat_file(f"{root}/config.json").decode()
    texts = {
        "ray job submit output": generate_job["submit"].stdout + generate_job["submit"].stderr,
        "ray job logs": generate_job["logs"].stdout,
        "ray job status": generate_job["status"].stdout,
        "config.json beside the output": dumped_config,
        # `ray job list` shows every job's runtime env to anyone holding the token.
        "ray job list": _ray_job(head, "list", timeout=60).stdout,
    }
    secrets = _secrets(head)
    assert all(len(v) >= 8 for v in secrets.values())
    for where, text in texts.items():
        assert text, f"{where} is empty: nothing was checked"
        assert leaked_secrets(text, secrets) == [], f"secret in {where}"


def test_the_worker_port_range_holds_none_of_the_heads_own_ports():
    """The head's ports come from the kernel's free ports, which lie in the same span as the worker range; a
    port inside the range made `ray start` refuse ("port … is used by other components"), seen once in CI."""
    from ffr.cluster.local_head import _free_port_range

    for _ in range(20):
        first, last = _free_port_range(100, low=30000, high=30300, avoid=[30150, 30151])
        assert last - first == 99 and not first <= 30150 <= last and not first <= 30151 <= last


def test_a_train_job_with_relative_paths_writes_into_the_jobs_working_directory(head):
    """`ffr train` with the shipped config's relative paths, submitted as docs/cluster.md says: the job's working
    directory is the uploaded one, and Ray Train's workers (elsewhere) must read and write there too."""
    runtime_env = build_runtime_env(REPO / "configs" / "runtime-env.yaml", environ={})
    check = "ls runs/colored-digits-none-*/ffr_result.json runs/colored-digits-none-*/checkpoint_epoch0001/model.pt"
    script = ("ffr train --config configs/train-colored-digits-none.yaml epochs=1 executor=ray-train image_size=16 "
              f"mlflow.enabled=false && echo job-cwd=$PWD && {check}")
    submit = _ray_job(head, "submit", "--working-dir", str(REPO), "--runtime-env-json", json.dumps(runtime_env),
                      "--", "bash", "-c", script)
    output = submit.stdout + submit.stderr
    assert submit.returncode == 0 and "succeeded" in output, output[-3000:]
    cwd = next(line.split("=", 1)[1] for line in submit.stdout.splitlines() if line.startswith("job-cwd="))
    summary = json.loads(next(line for line in submit.stdout.splitlines() if line.startswith('{"run_name"')))
    assert summary["run_dir"].startswith(f"{cwd}/runs/") and cwd != str(REPO), (cwd, summary)
