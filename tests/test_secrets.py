"""No configured secret (S3 keys, MLflow and Ray tokens) reaches a dumped run config, MLflow params, a job's runtime
env or the head's MLflow server log. (The generate job's own logs are checked in test_job_submit.py, on the job
that test already runs.) Each check also runs once on unredacted input, to show it would catch a leak.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import uuid
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from ffr.cluster.mlflow_server import start as start_mlflow_server
from ffr.cluster.runtime_env import build_runtime_env, check_runtime_env
from ffr.config import dump_config, redact
from ffr.errors import FFRError
from ffr.secrets import configured_secrets, is_secret_name, leaked_secrets, scrub

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def secrets(monkeypatch) -> dict[str, str]:
    """Credentials configured the way a laptop or CI has them: in the environment."""
    values = {
        "AWS_ACCESS_KEY_ID": "AKIA" + uuid.uuid4().hex[:16].upper(),
        "AWS_SECRET_ACCESS_KEY": "s3-secret-" + uuid.uuid4().hex,
        "MLFLOW_TRACKING_TOKEN": "mlflow-token-" + uuid.uuid4().hex,
        "MLFLOW_TRACKING_PASSWORD": "mlflow-password-" + uuid.uuid4().hex,
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture(scope="module")
def mlflow_db(tmp_path_factory) -> Path:
    """One SQLite store for the module: creating MLflow's schema takes seconds, so it is done once."""
    return tmp_path_factory.mktemp("mlflow") / "mlflow.db"


def _run_config(s: dict[str, str]) -> dict:
    """A run config with secrets under secret-looking keys, under harmless keys, and inside a URL."""
    return {
        "output": "s3://bucket/synthetic/run-1",
        "storage_options": {"key": s["AWS_ACCESS_KEY_ID"], "secret": s["AWS_SECRET_ACCESS_KEY"]},
        "mlflow": {"tracking_uri": f"https://ffr:{s['MLFLOW_TRACKING_PASSWORD']}@mlflow.internal:5000",
                   "tracking_token": s["MLFLOW_TRACKING_TOKEN"]},
        "notes": [f"copied from a shell: {s['AWS_SECRET_ACCESS_KEY']}"],
        "backend": {"tokenizer": "openai/clip-vit-base-patch32", "max_tokens": 77},
    }


def _flatten(d: dict, prefix: str = "") -> dict[str, str]:
    """Nested dict → {"a/b": "value"}, as Ray's MLflowLoggerCallback flattens a trial config into params."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = str(v)
    return out


def test_secret_names_are_matched_by_word():
    for name in ["AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN", "MLFLOW_TRACKING_TOKEN",
                 "MLFLOW_TRACKING_PASSWORD", "RAY_AUTH_TOKEN", "HF_TOKEN", "WANDB_API_KEY", "secretKey", "apiToken"]:
        assert is_secret_name(name), name
    for name in ["TOKENIZERS_PARALLELISM", "tokenizer", "max_tokens", "AWS_ENDPOINT_URL", "FFR_S3_ENDPOINT",
                 "MLFLOW_TRACKING_URI", "output", "author"]:
        assert not is_secret_name(name), name


def test_scrub_removes_configured_values_and_url_passwords(secrets):
    assert set(secrets) <= set(configured_secrets())
    text = f"uri=http://u:{secrets['MLFLOW_TRACKING_PASSWORD']}@h:5000 key={secrets['AWS_SECRET_ACCESS_KEY']} s3://b/k"
    assert leaked_secrets(text, secrets) != []  # the check sees the leak...
    clean = scrub(text)
    assert leaked_secrets(clean, secrets) == []  # ...and scrub removes it
    assert "http://<redacted>@h:5000" in clean and "s3://b/k" in clean


def test_dumped_run_config_holds_no_secret(secrets):
    config = _run_config(secrets)
    assert leaked_secrets(json.dumps(config), secrets)  # unredacted, every kind of leak is there
    dumped = dump_config(config)
    assert leaked_secrets(dumped, secrets) == []
    loaded = json.loads(dumped)
    # What is not a secret survives, so the dump still explains the run.
    assert loaded["output"] == "s3://bucket/synthetic/run-1"
    assert loaded["backend"] == {"tokenizer": "openai/clip-vit-base-patch32", "max_tokens": 77}
    assert loaded["mlflow"]["tracking_uri"] == "https://<redacted>@mlflow.internal:5000"


def test_dumped_dataclass_config_holds_no_secret(secrets):
    @dataclasses.dataclass
    class Storage:
        endpoint: str = "http://minio.internal:9000"
        aws_secret_access_key: str = ""
        key: str = ""

    dumped = dump_config(Storage(aws_secret_access_key=secrets["AWS_SECRET_ACCESS_KEY"],
                                 key=secrets["AWS_ACCESS_KEY_ID"]))
    assert leaked_secrets(dumped, secrets) == []
    assert json.loads(dumped)["endpoint"] == "http://minio.internal:9000"


def _logged_params(tracking_uri: str, params: dict[str, str]) -> dict[str, str]:
    """Log ``params`` in a fresh run (fluent API, as Tune's MLflow callback does) and read them back."""
    previous, previous_env = mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracking_uri)
    try:
        experiment_id = mlflow.create_experiment(f"secrets-{uuid.uuid4().hex[:8]}")
        with mlflow.start_run(experiment_id=experiment_id) as run:
            mlflow.log_params(params)
        return MlflowClient(tracking_uri).get_run(run.info.run_id).data.params
    finally:
        # set_tracking_uri also exports MLFLOW_TRACKING_URI; left set, every later command in this session
        # would log to MLflow's default ./mlflow.db instead of its own store.
        mlflow.set_tracking_uri(previous)
        if previous_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous_env


def test_mlflow_params_hold_no_secret(secrets, mlflow_db):
    tracking_uri = f"sqlite:///{mlflow_db}"
    config = _run_config(secrets)
    unredacted = _logged_params(tracking_uri, _flatten(config))
    assert leaked_secrets(json.dumps(unredacted), secrets)  # the store keeps whatever it is given
    stored = _logged_params(tracking_uri, _flatten(redact(config)))
    assert leaked_secrets(json.dumps(stored), secrets) == []
    assert stored["backend/tokenizer"] == "openai/clip-vit-base-patch32"


def test_runtime_env_refuses_credentials_and_keeps_endpoints(secrets):
    env = build_runtime_env(REPO / "configs" / "runtime-env.yaml",
                            environ={**os.environ, "FFR_S3_ENDPOINT": "http://minio.internal:9000",
                                     "MLFLOW_TRACKING_URI": "http://10.0.0.10:5000"})
    # Only locations travel from the shell, never the credentials that are also in it.
    assert env["env_vars"]["FFR_S3_ENDPOINT"] == "http://minio.internal:9000"
    assert env["env_vars"]["MLFLOW_TRACKING_URI"] == "http://10.0.0.10:5000"
    assert leaked_secrets(json.dumps(env), secrets) == []
    assert ".venv/" in env["excludes"]
    with pytest.raises(FFRError, match="AWS_SECRET_ACCESS_KEY.*credential"):
        build_runtime_env(REPO / "configs" / "runtime-env.yaml",
                          extra={"AWS_SECRET_ACCESS_KEY": secrets["AWS_SECRET_ACCESS_KEY"]})
    with pytest.raises(FFRError, match="MLFLOW_TRACKING_URI.*user:password"):
        check_runtime_env({"env_vars": {"MLFLOW_TRACKING_URI": "https://u:pw@mlflow.internal"}})
    with pytest.raises(FFRError, match="does not exist"):
        build_runtime_env(REPO / "configs" / "no-such-runtime-env.yaml")


def test_head_mlflow_server_refuses_public_binds(tmp_path):
    for host in ("0.0.0.0", "::", "8.8.8.8"):
        with pytest.raises(FFRError, match="bind host"):
            start_mlflow_server(host, 5000, f"sqlite:///{tmp_path}/m.db", str(tmp_path / "art"), tmp_path / "log")
    assert not (tmp_path / "log").exists()  # refused before anything started


def test_head_mlflow_server_stores_params_without_secrets(secrets, mlflow_db, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "server.log"
    url, pgid = start_mlflow_server("127.0.0.1", port, f"sqlite:///{mlflow_db}",
                                    str(tmp_path / "artifacts"), log, timeout_s=180, workers=1)
    try:
        assert url == f"http://127.0.0.1:{port}" and pgid is not None
        # `ray up` reruns start commands: a second start finds the running server instead of failing on the port.
        assert start_mlflow_server("127.0.0.1", port, None, str(tmp_path / "artifacts"), log) == (url, None)
        # The client sends MLFLOW_TRACKING_TOKEN (set by the fixture) as a header; it must not be stored or logged.
        stored = _logged_params(url, _flatten(redact(_run_config(secrets))))
        assert stored["output"] == "s3://bucket/synthetic/run-1"
        assert leaked_secrets(json.dumps(stored), secrets) == []
        assert leaked_secrets(log.read_text(errors="replace"), secrets) == []
    finally:
        os.killpg(pgid, signal.SIGTERM)


def test_runtime_env_cli_prints_json_or_one_error_line(secrets, capsys):
    from ffr.cluster.runtime_env import main as runtime_env_main

    path = str(REPO / "configs" / "runtime-env.yaml")
    assert runtime_env_main([path, "FFR_RUN_TAG=nightly"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["env_vars"]["FFR_RUN_TAG"] == "nightly"
    assert runtime_env_main([path, f"AWS_SECRET_ACCESS_KEY={secrets['AWS_SECRET_ACCESS_KEY']}"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert leaked_secrets(captured.err, secrets) == []
