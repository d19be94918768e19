"""A planted S3 key never reaches Ray's state, logs, dumped configs or MLflow after generate, train and sweep.

The rehearsal path of docs/cluster.md, for real: a token-auth head from ffr.cluster.local_head, started from an
environment holding a fake AWS key pair and session token. The head moves them into a mode-600 credentials file
(as a node has ~/.aws/credentials), every S3 access of the three jobs goes through it (the moto server accepts
any key), and then everything an operator or a token holder can read is scanned for the planted values:
``ray list actors/tasks/jobs --detail``, ``ray job list``, every file under the head's session log directory
(runtime_env_agent.log, raylet, GCS, job driver and worker logs), the three jobs' ``ray job logs``, every
JSON/YAML/CSV/text object the jobs wrote (dumped configs, Tune's params.json/result.json, summaries) and the
sweep's MLflow store (params, tags, and the raw sqlite file). Configs are tiny: the point is the plumbing.
"""

from __future__ import annotations

import importlib
import json
import shlex
import subprocess
import uuid
from pathlib import Path

import pytest

from ffr.cluster.local_head import local_head, venv_bin
from ffr.cluster.runtime_env import build_runtime_env
from ffr.secrets import leaked_secrets
from ffr.storage import filesystem

REPO = Path(__file__).resolve().parents[1]
PLANTED = {
    "AWS_ACCESS_KEY_ID": "AKIA" + uuid.uuid4().hex[:16].upper(),
    "AWS_SECRET_ACCESS_KEY": "planted-secret-" + uuid.uuid4().hex,
    "AWS_SESSION_TOKEN": "planted-session-" + uuid.uuid4().hex,
}
TINY_TRAIN = ["dataset=colored-digits", "backbone=small-cnn", "backbone_options={width: 4}", "pretrained=null",
              "image_size=16", "epochs=1", "batch_size=512", "cache_in_memory=true", "num_workers=1",
              "controller_failure_limit=1"]


def test_tune_would_copy_aws_keys_into_trials_and_ffr_stops_it(monkeypatch):
    """Ray 2.60's own propagation list holds the AWS key names; after ffr's hook a trial's runtime env has none."""
    from ray.tune.execution import class_cache

    from ffr.cluster.tune_env import keep_credentials_out_of_trials

    class_cache = importlib.reload(class_cache)  # Ray's list as shipped, before any sweep patched it
    assert {"AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"} <= set(class_cache.ENV_VARS_TO_PROPAGATE)
    for name, value in PLANTED.items():
        monkeypatch.setenv(name, value)
    kept = keep_credentials_out_of_trials()
    assert "RAY_TRAIN_V2_ENABLED" in kept  # what Tune + Train V2 need still travels

    class Trainable:
        pass

    options = class_cache._ActorClassCache().get(Trainable)._default_options
    assert leaked_secrets(json.dumps(options["runtime_env"]), PLANTED) == []


def _ray(head, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([venv_bin("ray"), *args], cwd=REPO, env=head.client_env(), capture_output=True, text=True,
                          timeout=timeout)


def _submit(head, runtime_env: dict, commands: list[list[str]]) -> dict:
    """One job running ``commands`` in turn (one working-dir upload and driver start instead of three)."""
    submission_id = f"scan-{uuid.uuid4().hex[:8]}"
    script = " && ".join(shlex.join(c) for c in commands)
    submit = _ray(head, "job", "submit", "--address", head.address, "--submission-id", submission_id,
                  "--working-dir", str(REPO), "--runtime-env-json", json.dumps(runtime_env), "--", "bash", "-c", script)
    logs = _ray(head, "job", "logs", "--address", head.address, submission_id, timeout=60)
    assert submit.returncode == 0 and "succeeded" in submit.stdout + submit.stderr, \
        submit.stdout[-3000:] + submit.stderr[-3000:]
    return {"`ray job submit` output": submit.stdout + submit.stderr, "`ray job logs`": logs.stdout}


@pytest.mark.slow
def test_planted_key_is_nowhere_after_generate_train_and_sweep(s3_endpoint, tmp_path):
    bucket = f"secrets-{uuid.uuid4().hex[:12]}"
    fs, _ = filesystem(f"s3://{bucket}")
    fs.mkdir(bucket)
    mlflow_db = tmp_path / "mlflow.db"
    runtime_env = build_runtime_env(REPO / "configs" / "runtime-env.yaml",
                                    environ={"FFR_S3_ENDPOINT": s3_endpoint, "AWS_ENDPOINT_URL": s3_endpoint})
    texts: dict[str, str] = {}
    with local_head(num_cpus=4, env=PLANTED) as head:
        credentials = (head.temp_dir / "aws_credentials").read_text()
        assert all(v in credentials for v in PLANTED.values())  # the jobs' S3 access really used the planted key
        assert (head.temp_dir / "aws_credentials").stat().st_mode & 0o077 == 0
        texts |= _submit(head, runtime_env, [
            ["ffr", "generate", "--config", "configs/generate-colored-digits.yaml", f"output=s3://{bucket}/digits",
             "budget.per_group=2", "shard_size=8", "ray.min_actors=1", "ray.max_actors=1"],
            ["ffr", "train", *TINY_TRAIN, f"storage_path=s3://{bucket}/runs"],
            ["ffr", "sweep", "name=scan", f"storage_path=s3://{bucket}/sweeps", *[f"train.{t}" for t in TINY_TRAIN],
             "methods=[erm]", "seeds=[0]", "search_method_hparams=false", "scheduler.type=fifo",
             f"mlflow.tracking_uri=sqlite:///{mlflow_db}"],
        ])
        assert texts["`ray job logs`"].count("every group has its target") == 1  # generate's summary line
        for what in ("actors", "tasks", "jobs"):
            listing = _ray(head, "list", what, "--detail", "--limit", "10000", "--address", head.address,
                           timeout=120)
            assert listing.returncode == 0, listing.stderr[-2000:]
            texts[f"`ray list {what} --detail`"] = listing.stdout
        texts["`ray job list`"] = _ray(head, "job", "list", "--address", head.address, timeout=60).stdout
        logs = sorted(p for p in (head.temp_dir / "session_latest" / "logs").rglob("*") if p.is_file())
        assert any(p.name.startswith("runtime_env_agent") for p in logs), [p.name for p in logs]
        for path in logs:
            texts[f"head log {path.name}"] = path.read_text(errors="replace") or "(empty)"

    fs.invalidate_cache()
    written = [p for p in fs.find(bucket) if p.rsplit(".", 1)[-1] in ("json", "yaml", "csv", "txt", "log")]
    assert any(p.endswith("config.json") for p in written) and any(p.endswith("sweep_config.json") for p in written)
    assert any(p.endswith("params.json") for p in written), written  # Tune's dumped trial configs
    for path in written:
        texts[f"s3://{path}"] = fs.cat_file(path).decode(errors="replace")

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{mlflow_db}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert runs, "the sweep logged no MLflow run"
    texts["MLflow params and tags"] = json.dumps([[r.data.params, r.data.tags] for r in runs])
    texts["MLflow sqlite file"] = mlflow_db.read_bytes().decode(errors="replace")

    assert len(texts) > 20 and all(texts.values()), [k for k, v in texts.items() if not v]
    leaks = {where: names for where, text in texts.items() if (names := leaked_secrets(text, PLANTED))}
    assert leaks == {}, leaks
