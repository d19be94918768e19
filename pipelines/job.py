"""Ray glue (thin): pending shard indices → ``map_batches`` over an actor pool of :class:`ShardWorker`.

The dataset holds one row per pending shard, one block each, so the job streams shard by shard (Ray's
bundler can never fuse two shards or cut one in half) and an actor processes a whole shard and writes it
itself. Only a small stats row travels back through the object store; images go straight from the actor
to storage as encoded bytes. ``num_gpus`` per actor makes Ray place one actor per GPU.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import ray

from ffr.cluster.resources import custom_resources
from ffr.ray_session import ensure_ray
from pipelines.config import RayConfig
from pipelines.worker import ShardWorker, WorkerSettings


class ShardActor:
    """The callable class Ray Data runs on each actor: builds the backend once, then one shard per call."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.worker = ShardWorker(settings)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        stats = [self.worker.process_shard(int(shard)) for shard in batch["shard"]]
        return {"shard": np.asarray([s["shard"] for s in stats], dtype=np.int64),
                "stats": np.asarray([json.dumps(s) for s in stats], dtype=object)}


@contextlib.contextmanager
def ray_data_console(verbose: bool) -> Iterator[None]:
    """Ray Data's execution banners (plan, "Starting execution", timings) and operator progress bars, only
    when ``verbose``: ``ffr generate`` shows its own one-line-per-round progress and a closing summary (and
    ``ffr d3s eval`` its own tables)."""
    ctx = ray.data.DataContext.get_current()
    logger = logging.getLogger("ray.data")
    saved = ctx.enable_progress_bars, logger.level
    # Ray Data logs a failed task's or actor's traceback at ERROR before raising it; the raised error is what
    # reaches the user (one line for an FFRError, the traceback for a bug), so the console copy is dropped.
    consoles = [h for h in logger.handlers if not isinstance(h, logging.FileHandler)
                and type(h).__name__ != "SessionFileHandler"]
    if not verbose:
        ctx.enable_progress_bars = False
        logger.setLevel(logging.WARNING)
        for handler in consoles:
            handler.addFilter(_below_error)
    try:
        yield
    finally:
        ctx.enable_progress_bars = saved[0]
        logger.setLevel(saved[1])
        for handler in consoles:
            handler.removeFilter(_below_error)


def _below_error(record: logging.LogRecord) -> bool:
    return record.levelno < logging.ERROR


def run_shards(shards: list[int], settings: WorkerSettings, cfg: RayConfig,
               env_vars: dict[str, str] | None = None, verbose: bool = False) -> Iterator[dict[str, Any]]:
    """Generate ``shards`` on the cluster; yields each shard's stats as it completes."""
    ensure_ray()
    resources = custom_resources("generate", cfg.num_gpus_per_actor, cfg.resources)
    ds = ray.data.from_items([{"shard": s} for s in shards], override_num_blocks=len(shards))
    ds = ds.map_batches(
        ShardActor,
        fn_constructor_kwargs={"settings": settings},
        batch_size=1,  # one shard per call; the backend batches images inside (settings.batch_size)
        compute=ray.data.ActorPoolStrategy(min_size=cfg.min_actors, max_size=cfg.max_actors,
                                           max_tasks_in_flight_per_actor=cfg.max_tasks_in_flight_per_actor),
        num_gpus=cfg.num_gpus_per_actor,
        num_cpus=cfg.num_cpus_per_actor,
        **({"runtime_env": {"env_vars": env_vars}} if env_vars else {}),
        **({"resources": resources} if resources else {}),  # lands actors on the generation node type
    )
    with ray_data_console(verbose):
        for row in ds.iter_rows():
            yield json.loads(row["stats"])
