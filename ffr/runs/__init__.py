"""The run directory: what every training run writes under ``{storage_path}/{run_name}/``, and how it is read.

``config.json`` (resolved, secrets redacted), ``splits.parquet`` (relative keys), ``metrics.jsonl`` (one
object per epoch), ``ffr_result.json`` (written last: the completion marker) and ``checkpoint_epochNNNN/``
directories holding ``model.pt``; a sweep adds ``stopped.json`` to a trial that its scheduler stopped early.
Works the same on local paths and ``s3://``. Training writes through this module; ``ffr report``, sweeps and
the demo read through it (:class:`RunRecord`, :func:`find_runs`, :func:`read_run`), and the best epoch is
chosen by one rule (:func:`selection_score`) in both places.

The result file is not called ``result.json``: Ray Tune writes its own ``result.json`` (JSON lines) into every
trial folder of the same sweep tree. Run directories written before the rename are still read: their
``result.json`` counts when a ``config.json`` sits beside it (a Tune trial folder has none).

Each run is counted once (:func:`unique_runs`), whatever copies of its files exist: a run's identity is its
name plus a digest of what it computed (config.json minus where/how it ran), so a copied folder, a symlink, the
same run found under a sweep folder and a runs folder, or the copies MLflow keeps as artifacts are one run.
MLflow's artifact store carries a marker file (:data:`NOT_RUNS_MARKER`, written by ``ffr.tracking``) and
discovery does not descend into a folder that holds one. Two copies of one identity with different results
are refused in one line naming both paths: averaging either would be wrong.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ffr.config import redact
from ffr.errors import FFRError
from ffr.storage import ensure_dir, filesystem, is_remote, join, write_atomic

if TYPE_CHECKING:  # the dataset readers import torch; readers of run directories (``ffr report``) need neither
    from ffr.datasets.base import GroupedSplit

CONFIG, SPLITS, METRICS, RESULT = "config.json", "splits.parquet", "metrics.jsonl", "ffr_result.json"
LEGACY_RESULT = "result.json"  # ffr's result file before it was renamed (see above)
STOPPED = "stopped.json"  # written by the sweep driver for a trial its scheduler (ASHA) stopped early
DIAGNOSTIC = "bg_diagnostic"  # the result file's (B, G) diagnostic (ffr.training.diagnostic)
CHECKPOINT_PREFIX, CHECKPOINT_FILE = "checkpoint_epoch", "model.pt"
STEPS_DIR = "steps"  # per-step loss terms of a method that logs them (Method.step_log): one JSON-lines file per epoch
# A folder holding this file, and everything below it, holds no runs (MLflow's artifact store keeps copies of
# every run's files; see ffr.tracking). Discovery skips it.
NOT_RUNS_MARKER = ".ffr-not-runs"
# Result-file fields that say where a copy lives, not what the run found: left out when two copies are compared.
_LOCATION_FIELDS = {"checkpoint", "init_checkpoint", "storage_path", "run_dir"}
SCORE = "selection_score"  # each epoch's metrics record carries it; checkpoints are ranked by it
# Fields of a training config that change where/how a run executes but not what it computes: left out of
# run-name hashes and of "same setting" comparisons.
# ``diagnostic`` is here too: it adds measurements to a run's evaluation, never changes what it trains or tests.
INFRA_FIELDS = ("storage_path", "run_name", "num_workers", "use_gpu", "cpus_per_worker", "max_failures",
                "controller_failure_limit", "keep_checkpoints", "cache_in_memory", "loader_workers", "fault_injection",
                "mlflow", "executor", "skipped_images", "diagnostic")
# Besides the seeds (top-level seed and dataset_options.seed, the split's seed): settings that follow the seed
# or the place a run was written, so runs that differ only in them are seeds of one setting.
_SEED_KEYS = {"seed"}
_NOT_SETTINGS = {*INFRA_FIELDS, "init_checkpoint", "synthetic_root"}


# --- the best-epoch rule ----------------------------------------------------------------------------------


def selection_score(val_worst_group_acc: float, epoch: int) -> float:
    """Model selection: best validation WGA; ties go to the earliest epoch."""
    wga = val_worst_group_acc if math.isfinite(val_worst_group_acc) else -1.0
    return wga - 1e-9 * epoch


def number(value: Any) -> float | None:
    """A metric value as a float; None for a missing, non-numeric or NaN one (JSON writes NaN as null)."""
    if value is None:
        return None
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(result) else result


# --- paths ------------------------------------------------------------------------------------------------


def run_dir(storage_path: str, run_name: str) -> str:
    return join(storage_path, run_name)


def checkpoint_name(epoch: int) -> str:
    return f"{CHECKPOINT_PREFIX}{epoch:04d}"


def checkpoint_dir(run_directory: str, epoch: int) -> str:
    return join(run_directory, checkpoint_name(epoch))


def saved_epochs(run_directory: str) -> list[int]:
    """Epochs with a complete checkpoint (``model.pt`` written) in a run directory, ascending."""
    fs, inner = filesystem(run_directory)
    if not fs.exists(inner):
        return []
    epochs = []
    for path in fs.ls(inner, detail=False):
        name = path.rstrip("/").rsplit("/", 1)[-1]
        if re.fullmatch(rf"{CHECKPOINT_PREFIX}\d+", name) and fs.exists(join(path, CHECKPOINT_FILE)):
            epochs.append(int(name[len(CHECKPOINT_PREFIX):]))
    return sorted(epochs)


# --- writing ----------------------------------------------------------------------------------------------


def _clean(obj):
    """JSON cannot hold NaN; an empty group's accuracy is written as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        return _clean(obj.item())
    return obj


def write_json(path: str, obj) -> None:
    fs, inner = filesystem(path)
    ensure_dir(fs, inner.rsplit("/", 1)[0] if "/" in inner else inner)
    write_atomic(fs, inner, json.dumps(_clean(obj), indent=2, sort_keys=True, default=str).encode())


def write_config(directory: str, config: dict) -> None:
    write_json(join(directory, CONFIG), redact(config))


def write_splits(directory: str, splits: dict[str, GroupedSplit]) -> None:
    from ffr.datasets.base import save_splits

    fs, inner = filesystem(directory)
    ensure_dir(fs, inner)
    save_splits(splits, join(directory, SPLITS))


def append_metrics(directory: str, record: dict) -> None:
    """Add one epoch's record. A resumed run redoes epochs after its last checkpoint, so records of the
    same stage at that epoch or later are replaced, never duplicated. (S3 has no append: rewrite.)"""
    kept = [r for r in read_metrics(directory)
            if not (r.get("stage") == record["stage"] and r.get("epoch", -1) >= record["epoch"])]
    kept.append(_clean(record))
    fs, inner = filesystem(join(directory, METRICS))
    ensure_dir(fs, inner.rsplit("/", 1)[0])
    with fs.open(inner, "w") as f:
        f.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))


def steps_path(directory: str, stage: int, epoch: int) -> str:
    return join(directory, STEPS_DIR, f"stage{stage}_epoch{epoch:04d}.jsonl")


def write_steps(directory: str, stage: int, epoch: int, records: list[dict]) -> None:
    """One epoch's per-step records ({"step": n, term: value, ...}); a resumed run rewrites the epochs it redoes."""
    text = "".join(json.dumps(_clean(r), sort_keys=True) + "\n" for r in records)
    path = steps_path(directory, stage, epoch)
    fs, inner = filesystem(path)
    ensure_dir(fs, inner.rsplit("/", 1)[0])
    write_atomic(fs, inner, text.encode())


def read_steps(directory: str, stage: int | None = None, epoch: int | None = None) -> list[dict]:
    """Per-step records of a run (all, or one stage's / one epoch's), in step order."""
    fs, inner = filesystem(join(directory, STEPS_DIR))
    fs.invalidate_cache(inner)
    if not fs.isdir(inner):
        return []
    pattern = re.compile(r"stage(\d+)_epoch(\d+)\.jsonl")
    records = []
    for path in sorted(fs.ls(inner, detail=False)):
        match = pattern.fullmatch(str(path).rstrip("/").rsplit("/", 1)[-1])
        if match is None or (stage is not None and int(match.group(1)) != stage) or \
                (epoch is not None and int(match.group(2)) != epoch):
            continue
        records += [json.loads(line) for line in fs.cat_file(path).decode().splitlines() if line.strip()]
    return sorted(records, key=lambda r: r.get("step", 0))


def write_result(directory: str, result: dict) -> None:
    write_json(join(directory, RESULT), result)


def write_stopped(directory: str, info: dict) -> None:
    write_json(join(directory, STOPPED), info)


# --- reading one file -------------------------------------------------------------------------------------


def _uri(root: str, inner: str) -> str:
    """An fsspec path back to the form the user gave (s3://bucket/... or a local path)."""
    return f"{root.split('://', 1)[0]}://{inner}" if is_remote(root) else inner


def _load_json(fs, inner: str, where: str) -> dict:
    try:
        data = json.loads(fs.cat_file(inner))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FFRError(f"run file {where!r} is not valid JSON ({e.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise FFRError(f"run file {where!r} holds a {type(data).__name__}; expected a JSON object")
    return data


def _load_metrics(fs, inner: str, where: str) -> list[dict]:
    """Per-epoch records, by (stage, epoch); a torn line (a writer killed mid-write) is skipped with a
    warning, and a resumed run's repeated epochs keep their latest record."""
    records: dict[tuple[Any, Any], dict] = {}
    bad = 0
    for line in fs.cat_file(inner).decode("utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(record, dict):
            records[(record.get("stage"), record.get("epoch"))] = record
        else:
            bad += 1
    if bad:
        warnings.warn(f"{where}: skipped {bad} unreadable line(s)", stacklevel=3)
    return sorted(records.values(), key=lambda r: (r.get("stage") or 0, r.get("epoch") or 0))


def read_json(path: str) -> dict | None:
    """A JSON object file of a run (local or s3://); None when it does not exist."""
    fs, inner = filesystem(path)
    if not fs.exists(inner):
        return None
    return _load_json(fs, inner, path)


def read_metrics(directory: str) -> list[dict]:
    fs, inner = filesystem(join(directory, METRICS))
    fs.invalidate_cache(inner)  # another process (a worker, a resumed run) may have rewritten it
    if not fs.exists(inner):
        return []
    return _load_metrics(fs, inner, join(directory, METRICS))


def _result_name(names: set[str]) -> str | None:
    """ffr's result file in a folder; the pre-rename ``result.json`` only beside a config.json (a Tune trial
    folder also holds a ``result.json``, of its own format, and no config.json)."""
    if RESULT in names:
        return RESULT
    return LEGACY_RESULT if LEGACY_RESULT in names and CONFIG in names else None


def _names(fs, inner: str) -> set[str]:
    return {str(p).rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(inner, detail=False)} if fs.isdir(inner) else set()


def result_path(directory: str) -> str | None:
    """The run's result file, current or legacy name; None while the run is unfinished."""
    fs, inner = filesystem(directory)
    fs.invalidate_cache(inner)  # written by another process (a trial, the driver) since the last listing
    name = _result_name(_names(fs, inner))
    return None if name is None else join(directory, name)


def read_result(directory: str) -> dict | None:
    path = result_path(directory)
    return None if path is None else read_json(path)


# --- run records and discovery ----------------------------------------------------------------------------


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(_flatten(value, name))
        else:
            out[name] = value
    return out


@dataclass
class RunRecord:
    """One run directory as read from storage."""

    path: str
    result: dict | None
    config: dict
    metrics: list[dict] = field(default_factory=list)
    stopped: dict | None = None  # a sweep scheduler (ASHA) stopped it early

    @property
    def finished(self) -> bool:
        return self.result is not None

    @property
    def status(self) -> str:
        return "finished" if self.finished else "stopped" if self.stopped is not None else "unfinished"

    def get(self, key: str, default: Any = None) -> Any:
        """A scalar field from the result file, else config.json, else the metrics (stage only)."""
        for source in (self.result or {}, self.config):
            value = source.get(key)
            if value is not None and not isinstance(value, (dict, list)):
                return value
        if key == "stage" and self.metrics:
            return self.metrics[-1].get("stage", default)
        return default

    @property
    def name(self) -> str:
        return str(self.get("run_name") or self.path.rstrip("/").rsplit("/", 1)[-1])

    @property
    def method_label(self) -> str:
        role = self.config.get("role")
        method = str(self.get("method", "?"))
        return f"{method} ({role})" if role and role != "train" else method

    def group_names(self) -> dict[int, str]:
        names = (self.result or {}).get("group_names") or {}
        return {int(g): str(n) for g, n in names.items()}

    def test_group_accuracies(self) -> dict[str, float | None]:
        """Test accuracy per group, keyed by group name, in group-id order."""
        test = (self.result or {}).get("test") or {}
        names = self.group_names()
        ids = sorted(int(k[len("acc_group_"):]) for k in test if re.fullmatch(r"acc_group_\d+", k))
        return {names.get(g, f"group {g}"): number(test[f"acc_group_{g}"]) for g in ids}

    def test_group_sizes(self) -> dict[str, int]:
        sizes = ((self.result or {}).get("group_sizes") or {}).get("test") or {}
        names = self.group_names()
        return {names.get(int(g), f"group {g}"): int(n) for g, n in sizes.items()}

    def val_curve(self) -> tuple[list[int], list[float]]:
        """(epochs, validation WGA) of this run's own stage, in epoch order."""
        stage = self.get("stage")
        records = [r for r in self.metrics if stage is None or r.get("stage") in (None, stage)]
        points = sorted((int(r["epoch"]), number(r.get("val_worst_group_acc"))) for r in records if "epoch" in r)
        return [e for e, _ in points], [float("nan") if v is None else v for _, v in points]

    def best(self) -> tuple[int | None, float | None]:
        """(best epoch, its validation WGA): the result file's, or for an unfinished run the best so far by
        training's rule (:func:`selection_score`) among the epochs validated."""
        if self.finished:
            return self.result.get("best_epoch"), number(self.result.get("best_val_worst_group_acc"))
        valid = [(e, v) for e, v in zip(*self.val_curve()) if not math.isnan(v)]
        return max(valid, key=lambda ev: selection_score(ev[1], ev[0])) if valid else (None, None)

    def settings(self) -> dict[str, Any]:
        """What this run computed, as flat keys: its config minus seeds, the paths that depend on the seed
        (synthetic_root, init_checkpoint) and where/how it ran, plus the generator of its synthetic images.
        Runs equal here differ only by seed."""
        if not self.config:  # a run directory without config.json: only what the result says
            out = {k: self.get(k) for k in ("dataset", "variant", "method", "stage")}
        else:
            if "_settings" not in self.__dict__:  # resolving options validates them: once per record
                self.__dict__["_settings"] = {
                    k: v for k, v in _flatten(with_option_defaults(self.config)).items()
                    if k.rsplit(".", 1)[-1] not in _SEED_KEYS and k.split(".", 1)[0] not in _NOT_SETTINGS}
            out = dict(self.__dict__["_settings"])
        # synthetic_root is left out above (it often follows the seed), but what made its images is not: runs on
        # two generators' outputs are two settings, the generator a study axis (issue 23)
        if (self.result or {}).get("generator"):
            out["generator"] = self.result["generator"]
        return out

    def setting_key(self) -> str:
        """:meth:`settings` as one comparable string."""
        return json.dumps(self.settings(), sort_keys=True, default=str)

    @property
    def identity(self) -> str:
        """The run's name and a digest of what it computed (config.json without where and how it ran):
        every copy of one run has the same identity, wherever it is stored."""
        computed = {k: v for k, v in self.config.items() if k not in INFRA_FIELDS}
        digest = hashlib.sha256(json.dumps(computed, sort_keys=True, default=str).encode()).hexdigest()[:12]
        return f"{self.name}#{digest}"

    def outcome(self) -> str | None:
        """What a finished run found (its result file without the paths of this copy), for comparing copies."""
        if self.result is None:
            return None
        return json.dumps({k: v for k, v in self.result.items() if k not in _LOCATION_FIELDS}, sort_keys=True,
                          default=str)


def with_option_defaults(config: dict) -> dict:
    """A config.json with its entries' options filled with their defaults, as training now writes them: a run
    written before that (``method_hparams: {}``) is the same setting as one that records the defaults. An entry
    this process cannot resolve (a plugin not installed here, an option since removed) is left as written."""
    from ffr.backbones import BACKBONES
    from ffr.datasets import DATASETS
    from ffr.methods import METHODS

    out = dict(config)
    for registry, name_key, key in ((DATASETS, "dataset", "dataset_options"),
                                    (BACKBONES, "backbone", "backbone_options"), (METHODS, "method", "method_hparams")):
        if isinstance(config.get(name_key), str) and isinstance(config.get(key, {}), dict):
            try:
                out[key] = registry.options(config[name_key], config.get(key) or {}, key).to_dict()
            except FFRError:
                pass
    return out


def _read_run(fs, root: str, directory: str, names: set[str]) -> RunRecord:
    where = _uri(root, directory)
    result_name = _result_name(names)
    result = _load_json(fs, f"{directory}/{result_name}", f"{where}/{result_name}") if result_name else None
    config = _load_json(fs, f"{directory}/{CONFIG}", f"{where}/{CONFIG}") if CONFIG in names else {}
    metrics = _load_metrics(fs, f"{directory}/{METRICS}", f"{where}/{METRICS}") if METRICS in names else []
    stopped = _load_json(fs, f"{directory}/{STOPPED}", f"{where}/{STOPPED}") if STOPPED in names else None
    return RunRecord(where, result, config, metrics, stopped)


def _preferred(a: RunRecord, b: RunRecord) -> RunRecord:
    """Of two copies of one run: the finished one, then the one with more epochs recorded, then the shorter
    (then the first) path. Two finished copies with different results are refused."""
    if a.finished and b.finished and a.outcome() != b.outcome():
        raise FFRError(f"run {a.name!r} has two different results with one identity: {a.path!r} and {b.path!r}; "
                       "expected copies of one run to agree (remove or rename the stale copy)")
    return min((a, b), key=lambda r: (not r.finished, -len(r.metrics), len(r.path), r.path))


def unique_runs(records: list[RunRecord]) -> list[RunRecord]:
    """One record per run identity (:attr:`RunRecord.identity`), in path order; see the module docstring."""
    kept: dict[str, RunRecord] = {}
    for record in records:
        kept[record.identity] = _preferred(kept[record.identity], record) if record.identity in kept else record
    return sorted(kept.values(), key=lambda r: r.path)


def find_runs(root: str) -> list[RunRecord]:
    """Every run under ``root`` (recursively; ``root`` itself may be one), finished or not, each once: a folder
    with a result file or a ``metrics.jsonl`` (checkpoint folders, Tune's trial folders and folders marked with
    :data:`NOT_RUNS_MARKER` aside)."""
    fs, inner = filesystem(root)
    if is_remote(root):
        fs.invalidate_cache()  # runs may have been written by other processes since the last listing
    if not fs.exists(inner):
        raise FFRError(f"runs root {root!r} does not exist")
    files = [str(p) for p in fs.find(inner)] if fs.isdir(inner) else []
    marked = sorted({path.rpartition("/")[0] + "/" for path in files if path.endswith("/" + NOT_RUNS_MARKER)})
    by_dir: dict[str, set[str]] = {}
    for path in files:
        directory, _, name = path.rpartition("/")
        if name in (RESULT, LEGACY_RESULT, METRICS, CONFIG, STOPPED) and \
                not re.search(r"/checkpoint_[^/]*(/|$)", directory + "/") and \
                not any((directory + "/").startswith(m) for m in marked):
            by_dir.setdefault(directory, set()).add(name)
    return unique_runs([_read_run(fs, root, directory, names) for directory, names in sorted(by_dir.items())
                        if _result_name(names) or METRICS in names])


def read_run(directory: str) -> RunRecord:
    """One run directory (local or s3://); empty when nothing is there yet."""
    fs, inner = filesystem(directory)
    fs.invalidate_cache(inner)
    return _read_run(fs, directory, inner.rstrip("/"), _names(fs, inner))


# --- stage-1 checkpoints for stage 2 ----------------------------------------------------------------------


def best_run_of_sweep(root: str, seed: int, stage: int = 1) -> str:
    """FFR's ``get_best_hyper``: among finished ``stage`` runs under ``root``, the setting (every config key
    but the seeds, as in ``ffr report``) with the best mean validation WGA over seeds; returns that setting's
    run directory for ``seed``."""
    by_key: dict[str, dict[int, tuple[str, float]]] = defaultdict(dict)
    for record in find_runs(root):
        if not record.finished or not record.config or int(record.result.get("stage", -1)) != stage:
            continue
        wga = number(record.result.get("best_val_worst_group_acc"))
        by_key[record.setting_key()][int(record.result["seed"])] = (record.path,
                                                                    float("nan") if wga is None else wga)
    if not by_key:
        raise FFRError(f"no finished stage-{stage} runs under {root!r}")
    candidates = [(float(np.nanmean([w for _, w in runs.values()])), key) for key, runs in by_key.items()
                  if seed in runs]
    if not candidates:
        raise FFRError(f"no stage-{stage} run under {root!r} was trained with seed {seed}")
    _, best_key = max(candidates, key=lambda c: (c[0], c[1]))
    return by_key[best_key][seed][0]


def _holds_model(directory: str) -> bool:
    fs, inner = filesystem(directory)
    return fs.exists(join(inner, CHECKPOINT_FILE))


def run_checkpoint(reference: str) -> str | None:
    """A checkpoint directory (has model.pt) as it is, or a finished run directory's best checkpoint: the one its
    result file names, else ``checkpoint_epoch{best_epoch}`` inside it (a run copied or moved elsewhere still
    finds its own); None when ``reference`` is neither."""
    if _holds_model(reference):
        return reference
    result = read_result(reference)
    if not result:
        return None
    named = result.get("checkpoint")
    if named and _holds_model(named):
        return named
    if result.get("best_epoch") is not None and _holds_model(checkpoint_dir(reference, int(result["best_epoch"]))):
        return checkpoint_dir(reference, int(result["best_epoch"]))
    return named or None


def resolve_checkpoint(reference: str, seed: int) -> str:
    """A stage-1 reference → a checkpoint directory: a checkpoint dir (has model.pt), a finished run dir
    (its result file's checkpoint), or ``best:<sweep dir>`` (the best stage-1 run for this seed)."""
    if reference.startswith("best:"):
        reference = best_run_of_sweep(reference[len("best:"):], seed, stage=1)
    found = run_checkpoint(reference)
    if found is not None:
        return found
    raise FFRError(f"init_checkpoint {reference!r} is neither a checkpoint directory (with model.pt) nor a "
                   f"finished run directory (with {RESULT}); expected one of those or best:<sweep dir>")
