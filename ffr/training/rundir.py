"""The run directory contract: what every training run writes under ``{storage_path}/{run_name}/``.

``config.json`` (resolved, secrets redacted), ``splits.parquet`` (relative keys), ``metrics.jsonl`` (one
object per epoch), ``ffr_result.json`` (written last: the completion marker) and Ray Train's ``checkpoint_*``
directories; a sweep adds ``stopped.json`` to a trial that its scheduler stopped early. Works the same on local
paths and ``s3://``; readers here are shared with ``ffr report`` and ``tune/``.

The result file is not called ``result.json``: Ray Tune writes its own ``result.json`` (JSON lines) into every
trial folder of the same sweep tree. Run directories written before the rename are still read: their
``result.json`` counts when a ``config.json`` sits beside it (a Tune trial folder has none).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict

import numpy as np

from ffr.config import redact
from ffr.datasets.base import GroupedSplit, save_splits
from ffr.errors import FFRError
from ffr.storage import ensure_dir, filesystem, join, write_atomic

CONFIG, SPLITS, METRICS, RESULT = "config.json", "splits.parquet", "metrics.jsonl", "ffr_result.json"
LEGACY_RESULT = "result.json"  # ffr's result file before it was renamed (see above)
STOPPED = "stopped.json"  # written by the sweep driver for a trial its scheduler (ASHA) stopped early


def run_dir(storage_path: str, run_name: str) -> str:
    return join(storage_path, run_name)


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


def read_json(path: str) -> dict | None:
    fs, inner = filesystem(path)
    if not fs.exists(inner):
        return None
    return json.loads(fs.cat_file(inner))


def write_config(directory: str, config: dict) -> None:
    write_json(join(directory, CONFIG), redact(config))


def write_splits(directory: str, splits: dict[str, GroupedSplit]) -> None:
    fs, inner = filesystem(directory)
    ensure_dir(fs, inner)
    save_splits(splits, join(directory, SPLITS))


def read_metrics(directory: str) -> list[dict]:
    fs, inner = filesystem(join(directory, METRICS))
    if not fs.exists(inner):
        return []
    fs.invalidate_cache(inner)
    return [json.loads(line) for line in fs.cat_file(inner).decode().splitlines() if line.strip()]


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


def write_result(directory: str, result: dict) -> None:
    write_json(join(directory, RESULT), result)


def result_path(directory: str) -> str | None:
    """The run's result file, current or legacy name; None while the run is unfinished."""
    fs, inner = filesystem(directory)
    if fs.exists(join(inner, RESULT)):
        return join(directory, RESULT)
    if fs.exists(join(inner, LEGACY_RESULT)) and fs.exists(join(inner, CONFIG)):
        return join(directory, LEGACY_RESULT)
    return None


def read_result(directory: str) -> dict | None:
    path = result_path(directory)
    return None if path is None else read_json(path)


def write_stopped(directory: str, info: dict) -> None:
    write_json(join(directory, STOPPED), info)


def read_stopped(directory: str) -> dict | None:
    return read_json(join(directory, STOPPED))


def list_runs(root: str) -> list[str]:
    """Run directories directly under ``root`` that have a result file (finished runs)."""
    fs, inner = filesystem(root)
    if not fs.exists(inner):
        raise FFRError(f"runs root {root!r} does not exist")
    fs.invalidate_cache(inner)
    found = []
    for entry in sorted(fs.ls(inner, detail=False)):
        name = str(entry).rstrip("/").rsplit("/", 1)[-1]
        if result_path(join(root, name)) is not None:
            found.append(join(root, name))
    return found


def _sweep_key(config: dict) -> str:
    """What makes two runs the same configuration apart from the seed."""
    from ffr.training.config import INFRA_FIELDS

    ignore = {"seed", "init_checkpoint", *INFRA_FIELDS}
    return json.dumps({k: v for k, v in config.items() if k not in ignore}, sort_keys=True, default=str)


def best_run_of_sweep(root: str, seed: int, stage: int = 1) -> str:
    """FFR's ``get_best_hyper``: among finished ``stage`` runs under ``root``, the configuration with the
    best mean validation WGA over seeds; returns that configuration's run directory for ``seed``."""
    by_key: dict[str, dict[int, tuple[str, float]]] = defaultdict(dict)
    for directory in list_runs(root):
        result, config = read_result(directory), read_json(join(directory, CONFIG))
        if not result or not config or int(result.get("stage", -1)) != stage:
            continue
        wga = result.get("best_val_worst_group_acc")
        by_key[_sweep_key(config)][int(result["seed"])] = (directory, float("nan") if wga is None else wga)
    if not by_key:
        raise FFRError(f"no finished stage-{stage} runs under {root!r}")
    candidates = [(float(np.nanmean([w for _, w in runs.values()])), key) for key, runs in by_key.items()
                  if seed in runs]
    if not candidates:
        raise FFRError(f"no stage-{stage} run under {root!r} was trained with seed {seed}")
    _, best_key = max(candidates, key=lambda c: (c[0], c[1]))
    return by_key[best_key][seed][0]


def resolve_checkpoint(reference: str, seed: int) -> str:
    """A stage-1 reference → a checkpoint directory: a checkpoint dir (has model.pt), a finished run dir
    (its result file's checkpoint), or ``best:<sweep dir>`` (the best stage-1 run for this seed)."""
    from ffr.training.loop import CHECKPOINT_FILE

    if reference.startswith("best:"):
        reference = best_run_of_sweep(reference[len("best:"):], seed, stage=1)
    fs, inner = filesystem(reference)
    if fs.exists(join(inner, CHECKPOINT_FILE)):
        return reference
    result = read_result(reference)
    if result and result.get("checkpoint"):
        return result["checkpoint"]
    raise FFRError(f"init_checkpoint {reference!r} is neither a checkpoint directory (with model.pt) nor a "
                   f"finished run directory (with {RESULT}); expected one of those or best:<sweep dir>")
