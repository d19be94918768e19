"""MLflow tracking of training runs: one MLflow run per ffr run (stage), used by ``ffr train`` and ``ffr sweep``.

Where runs go (:func:`tracking_uri`): ``mlflow.tracking_uri`` from the config, else ``$MLFLOW_TRACKING_URI``
(the head's server on a cluster), else a sqlite store ``mlflow.db`` beside a local ``storage_path`` (MLflow
≥ 3.13 refuses ``./mlruns`` file stores). With ``s3://`` storage and no URI there is no local place every
node can write a database to, so nothing is tracked and the command says so; set ``MLFLOW_TRACKING_URI`` to
a tracking server (``ffr.cluster.mlflow_server`` on the head). ``mlflow.enabled: false`` turns tracking off.

What one run records: the resolved config as flat params (``stage1.lr``; secrets redacted as in config.json),
dataset / variant / method / stage / seed as tags, per-epoch metrics with group *names* in the keys
(``val_acc/small (0-4)/red``), the final val/test metrics and group sizes, and the run's files as artifacts
(config.json, metrics.jsonl, the result file, per-run plots). The client API is used throughout (explicit run
ids, no process-global active run): the driver, the Ray Train controller and concurrent sweep trials all log.
This module imports no Ray.
"""

from __future__ import annotations

import logging
import math
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from ffr.config import redact
from ffr.errors import FFRError
from ffr.runs import DIAGNOSTIC, NOT_RUNS_MARKER
from ffr.storage import is_remote, join

RUN_NAME_TAG = "ffr.run_name"
TAG_KEYS = ("dataset", "variant", "method", "stage", "seed")
_BATCH = 100  # MLflow's limit of params per log_batch call
_STEP_BATCH = 1000  # ... and of metrics
_MAX_PARAM = 6000


@dataclass
class MLflowConfig:
    enabled: bool = True
    tracking_uri: str | None = None  # sqlite:///path/mlflow.db, or http://<head>:5000 on a cluster
    experiment_name: str | None = None  # default: the dataset's name (ffr train) or the sweep's name
    tags: dict[str, str] = field(default_factory=dict)


def tracking_uri(cfg: MLflowConfig, storage_path: str) -> str | None:
    """The URI runs are logged to, or None when they are not tracked (see the module docstring)."""
    if not cfg.enabled:
        return None
    if cfg.tracking_uri:
        check_uri(cfg.tracking_uri)
        return cfg.tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if is_remote(storage_path):
        return None
    return f"sqlite:///{os.path.abspath(join(storage_path, 'mlflow.db'))}"


def ui_line(uri: str | None) -> str:
    """The line a command prints so its runs can be looked at."""
    if uri is None:
        return ("MLflow: not tracked (s3:// storage and no tracking URI; set MLFLOW_TRACKING_URI or "
                "mlflow.tracking_uri to a tracking server)")
    return f"MLflow: mlflow ui --backend-store-uri {redact(uri)}"


def _quiet_store_logs() -> None:
    # Creating a sqlite store runs Alembic migrations, which log a dozen INFO lines per new database.
    for name in ("alembic", "mlflow.store.db.utils", "mlflow.tracking._tracking_service.client"):
        logging.getLogger(name).setLevel(logging.WARNING)


def client(uri: str):
    from mlflow.tracking import MlflowClient

    _quiet_store_logs()
    if uri.startswith("sqlite:///"):
        os.makedirs(os.path.dirname(uri[len("sqlite:///"):]) or ".", exist_ok=True)
    return MlflowClient(tracking_uri=uri)


def mark_not_runs(artifact_location: str | None) -> None:
    """Mark a local artifact store as holding no runs (``ffr.runs.NOT_RUNS_MARKER``): it sits beside the run
    directories (``{storage_path}/mlartifacts``) and holds a copy of every run's files, which run discovery
    would otherwise count as more runs."""
    if not artifact_location or not artifact_location.startswith("file://"):
        return
    directory = artifact_location[len("file://"):]
    marker = os.path.join(directory, NOT_RUNS_MARKER)
    if not os.path.exists(marker):
        os.makedirs(directory, exist_ok=True)
        with open(marker, "w") as f:
            f.write("MLflow's artifact store: copies of run files, not runs. ffr report and run discovery skip "
                    "this folder.\n")


def experiment_id(uri: str, name: str) -> str:
    """The experiment's id, created if needed; a sqlite store keeps artifacts in ``mlartifacts/`` beside it
    (MLflow's default would be relative to whichever directory the command ran in), marked as no runs."""
    mlflow_client = client(uri)
    location = None
    if uri.startswith("sqlite:///"):
        location = "file://" + os.path.join(os.path.dirname(uri[len("sqlite:///"):]), "mlartifacts")
        mark_not_runs(location)  # also marks the store of an experiment created before the marker existed
    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return mlflow_client.create_experiment(name, artifact_location=location)
    except Exception:  # another trial created it in the meantime
        found = mlflow_client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def flatten(obj: Any, prefix: str = "") -> dict[str, str]:
    """Nested config → {"stage1.lr": "0.0001", ...} (lists stay one value)."""
    out: dict[str, str] = {}
    if isinstance(obj, dict):
        for key, value in obj.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, dict) and value:
                out.update(flatten(value, name))
            else:
                out[name] = str(value)[:_MAX_PARAM]
    return out


def metric_key(name: str) -> str:
    """A group name as MLflow accepts it in a metric key (letters, digits, ``_-.:/`` and spaces):
    ``small (0-4)/red`` → ``small 0-4/red``, ``digit>=5/red`` → ``digit ge 5/red``."""
    for symbol, word in ((">=", " ge "), ("<=", " le "), ("<", " lt "), (">", " gt "), ("=", " eq ")):
        name = name.replace(symbol, word)
    name = re.sub(r"[()\[\]{}]", "", name)
    return re.sub(r"\s+", " ", re.sub(r"[^A-Za-z0-9_\-.:/ ]", "_", name)).strip()


def epoch_metrics(record: dict, group_names: list[str], train_group_names: list[str] | None = None
                  ) -> dict[str, float]:
    """One epoch's record (ffr.training.stage) → MLflow metrics, each per-group one keyed by the groups it is
    about: ``val_acc_group_3`` by the (real) validation groups (``val_acc/<name>``), ``train_draws_group_5`` by
    the stage's *training* groups (``train_draws/<class>/<bias>/<source>``: USB/ASB train on 8 (class, bias,
    source) groups, FFR's stage 1 on synthetic images only), ``train_group_names`` (default: ``group_names``)."""
    names = {"val_acc": group_names, "train_draws": group_names if train_group_names is None else train_group_names}
    out = {}
    for key, value in record.items():
        if key in ("stage", "epoch", "attempt_start_epoch") or not isinstance(value, (int, float)):
            continue
        match = re.fullmatch(r"(val_acc|train_draws)_group_(\d+)", key)
        if match:
            kind, g = match.group(1), int(match.group(2))
            key = f"{kind}/{metric_key(names[kind][g]) if g < len(names[kind]) else f'group {g}'}"
        out[key] = float(value)
    return out


FINAL_PREFIX = {"val": "final_val", "base_val": "final_base_val", "test": "test", "base_test": "base_test"}


def final_metrics(result: dict) -> dict[str, float]:
    """The result file's evaluation → ``test_worst_group_acc``, ``test_acc/<group>``, ``test_n/<group>``, and
    the tested checkpoint's validation numbers as ``final_val_*`` (``val_*`` are the per-epoch curves)."""
    names = {int(g): n for g, n in (result.get("group_names") or {}).items()}
    out: dict[str, float] = {}
    for split in ("val", "test", "base_val", "base_test"):
        for key, value in (result.get(split) or {}).items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            match = re.fullmatch(r"acc_group_(\d+)", key)
            if match:
                g = int(match.group(1))
                key = f"acc/{metric_key(names.get(g, f'group {g}'))}"
            out[f"{FINAL_PREFIX[split]}_{key}"] = float(value)
    for split, sizes in (result.get("group_sizes") or {}).items():
        for g, n in sizes.items():
            prefix = "final_val" if split == "val" else split
            out[f"{prefix}_n/{metric_key(names.get(int(g), f'group {g}'))}"] = float(n)
    for key in ("best_epoch", "best_val_worst_group_acc"):
        if isinstance(result.get(key), (int, float)):
            out[key] = float(result[key])
    for name, probe in (result.get("probes") or {}).items():  # a method's analyses (Method.analyze_features)
        for key, value in probe.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[f"probe/{metric_key(name)}/{key}"] = float(value)
    out.update(diagnostic_metrics(result.get(DIAGNOSTIC) or {}))
    return out


def diagnostic_metrics(diagnostic: dict) -> dict[str, float]:
    """The (B, G) diagnostic (ffr.training.diagnostic) → ``diag_probe_real_vs_synthetic_acc``,
    ``diag_synthetic_worst_group_acc`` and ``diag_acc/<class>/<bias>/<real|synthetic>``."""
    out: dict[str, float] = {}
    probe = diagnostic.get("probe") or {}
    for key in ("accuracy", "real_accuracy", "synthetic_accuracy"):
        if isinstance(probe.get(key), (int, float)):
            out[f"diag_probe_real_vs_synthetic_{key.replace('accuracy', 'acc')}"] = float(probe[key])
    for key in ("worst_group_acc", "mean_group_acc", "overall_acc"):
        value = (diagnostic.get("synthetic") or {}).get(key)
        if isinstance(value, (int, float)):
            out[f"diag_synthetic_{key}"] = float(value)
    for name, value in (diagnostic.get("accuracy") or {}).items():
        if isinstance(value, (int, float)):
            out[f"diag_acc/{metric_key(name)}"] = float(value)
    return out


def log_step_metrics(uri: str, run_id: str, steps: list[dict]) -> None:
    """Per-step records ({"step": n, term: value}) → ``step/<term>`` metrics at step n, in as few batches as
    MLflow allows."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(f"step/{k}", float(v), now, int(record["step"])) for record in steps
             for k, v in record.items() if k != "step" and isinstance(v, (int, float)) and math.isfinite(v)]
    mlflow_client = client(uri)
    for i in range(0, len(items), _STEP_BATCH):
        mlflow_client.log_batch(run_id, metrics=items[i:i + _STEP_BATCH])


def log_metrics(uri: str, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None and math.isfinite(v)]
    mlflow_client = client(uri)
    for i in range(0, len(items), _BATCH):
        mlflow_client.log_batch(run_id, metrics=items[i:i + _BATCH])


class RunTracker:
    """The MLflow run of one ffr run. ``start`` finds the run of an earlier attempt (same experiment and
    ffr run name, not finished) and continues it, so a resumed ffr run stays one MLflow run."""

    def __init__(self, uri: str, experiment: str, run_name: str, tags: dict[str, Any]) -> None:
        self.uri, self.experiment, self.run_name = uri, experiment, run_name
        self.tags = {k: str(v) for k, v in redact(dict(tags)).items() if v is not None}
        self.run_id: str | None = None

    def start(self, params: dict[str, Any]) -> str:
        from mlflow.entities import Param, RunTag

        mlflow_client = client(self.uri)
        exp = experiment_id(self.uri, self.experiment)
        earlier = mlflow_client.search_runs(
            [exp], filter_string=f"tags.`{RUN_NAME_TAG}` = '{self.run_name}' and attributes.status != 'FINISHED'",
            max_results=1, order_by=["attributes.start_time DESC"])
        if earlier:
            self.run_id = earlier[0].info.run_id
            mlflow_client.update_run(self.run_id, status="RUNNING")
        else:
            run = mlflow_client.create_run(exp, tags={**self.tags, RUN_NAME_TAG: self.run_name},
                                           run_name=self.run_name)
            self.run_id = run.info.run_id
            flat = flatten(redact(params))
            items = [Param(k, v) for k, v in sorted(flat.items())]
            for i in range(0, len(items), _BATCH):
                mlflow_client.log_batch(self.run_id, params=items[i:i + _BATCH])
        mlflow_client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in self.tags.items()])
        return self.run_id

    def finish(self, result: dict, artifacts: dict[str, bytes]) -> None:
        """Final metrics, the run's files and plots (``artifacts``: bytes by file name), status FINISHED."""
        log_metrics(self.uri, self.run_id, final_metrics(result))
        mlflow_client = client(self.uri)
        with tempfile.TemporaryDirectory() as tmp:
            for name, data in sorted(artifacts.items()):
                with open(os.path.join(tmp, name), "wb") as f:
                    f.write(data)
                mlflow_client.log_artifact(self.run_id, os.path.join(tmp, name))
        mlflow_client.set_terminated(self.run_id, "FINISHED")

    def fail(self) -> None:
        if self.run_id is not None:
            client(self.uri).set_terminated(self.run_id, "FAILED")


def runs_named(uri: str, experiment: str, run_name: str) -> list:
    """MLflow runs of one ffr run name (used by the sweep to mark trials its scheduler stopped)."""
    mlflow_client = client(uri)
    found = mlflow_client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return mlflow_client.search_runs([found.experiment_id], filter_string=f"tags.`{RUN_NAME_TAG}` = '{run_name}'")


def check_uri(uri: str) -> None:
    """A URI MLflow can open, else one line."""
    if not re.match(r"^(sqlite|postgresql|mysql|mssql|https?|databricks)[+a-z]*:", uri):
        raise FFRError(f"mlflow.tracking_uri {uri!r} is not a tracking URI; expected sqlite:///path/mlflow.db "
                       "or http://host:port")
