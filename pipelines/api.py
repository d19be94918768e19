"""``pipelines.generate(config) -> summary``: the one entry point behind ``ffr generate`` and the demo.

recipe → manifest (written once) → pending shards → workers (Ray actor pool, or in-process) → shards,
then ``groups.json``, ``config.json``, contact sheets and ``summary.json``. A rerun with the same config
and output skips complete shards; a different config on the same output is refused before anything is
written.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import pandas as pd

from ffr.config import dump_config
from ffr.errors import FFRError
from ffr.shards import complete_shards, write_groups
from ffr.storage import filesystem, join
from pipelines.config import GenerateConfig, to_config
from pipelines.manifest import build_manifest, fingerprint, group_budgets, write_manifest
from pipelines.recipes import create as create_recipe
from pipelines.review import contact_sheets, summarize, write_json
from pipelines.worker import ShardWorker, WorkerSettings

log = logging.getLogger(__name__)


def _settings(cfg: GenerateConfig, recipe) -> WorkerSettings:
    gray = recipe.gray_threshold if cfg.filters.gray_threshold is None else cfg.filters.gray_threshold
    return WorkerSettings(output=cfg.output, backend=cfg.backend.name or recipe.default_backend,
                          backend_settings=dict(cfg.backend.settings), batch_size=cfg.batch_size,
                          image_format=cfg.image_format, gray_threshold=float(gray),
                          clip_model=cfg.filters.clip_model, clip_threshold=cfg.filters.clip_threshold)


def check_writable(root: str) -> None:
    """Fail in one line, before any work, when the output cannot be written (bad bucket, no credentials)."""
    fs, base = filesystem(root)
    probe = join(base, ".ffr-write-check")
    try:
        fs.makedirs(base, exist_ok=True)
        with fs.open(probe, "wb") as f:
            f.write(b"ok")
        fs.rm(probe)
    except Exception as e:  # noqa: BLE001 — any storage failure here is the user's setup, not a bug
        raise FFRError(f"output {root!r} is not writable: {type(e).__name__}: {str(e).splitlines()[0]}") from None


def _run_local(shards: list[int], settings: WorkerSettings) -> Iterator[dict[str, Any]]:
    worker = ShardWorker(settings)
    for shard in shards:
        yield worker.process_shard(shard)


def _progress(it: Iterator[dict], total: int, enabled: bool) -> Iterator[dict]:
    if not enabled:
        yield from it
        return
    from tqdm import tqdm

    with tqdm(total=total, unit="shard", desc="generate") as bar:
        for stats in it:
            bar.update(1)
            bar.set_postfix(accepted=stats["n_accepted"], refresh=False)
            yield stats


def _plan(cfg: GenerateConfig):
    recipe = create_recipe(cfg.recipe.name, cfg.recipe.options)
    spec = recipe.spec()
    manifest = build_manifest(recipe, group_budgets(spec, cfg.budget), cfg.seed, cfg.shard_size, cfg.generator)
    return recipe, spec, manifest


def plan(config: GenerateConfig | dict[str, Any]) -> pd.DataFrame:
    """The manifest a config would generate (nothing is written)."""
    return _plan(to_config(config))[2]


def generate(config: GenerateConfig | dict[str, Any]) -> dict[str, Any]:
    """Run (or resume) one generation run; returns the summary also written to ``{output}/summary.json``."""
    cfg = to_config(config)
    if cfg.s3_endpoint:  # before any S3 access; Ray workers get it through the job's runtime_env
        os.environ["FFR_S3_ENDPOINT"] = cfg.s3_endpoint
    recipe, spec, manifest = _plan(cfg)
    settings = _settings(cfg, recipe)
    print_ = fingerprint(manifest, {"backend": settings.backend, "backend_settings": settings.backend_settings,
                                    "image_format": settings.image_format, "gray": settings.gray_threshold,
                                    "clip": [settings.clip_model, settings.clip_threshold]})
    check_writable(cfg.output)
    recipe.prepare(cfg)  # e.g. D3S background templates, generated once beside the output
    info = write_manifest(cfg.output, manifest, print_)
    write_groups(cfg.output, spec)
    write_json(cfg.output, "config.json", json.loads(dump_config(cfg)))  # secrets redacted
    done = set(complete_shards(cfg.output))
    pending = [s for s in range(info["n_shards"]) if s not in done]
    log.info("%d shards, %d complete, %d to generate", info["n_shards"], len(done), len(pending))
    start = time.perf_counter()
    run_stats: list[dict] = []
    if pending:
        if cfg.runner == "ray":
            from pipelines.job import run_shards  # Ray is imported only when the Ray runner is used

            env = {"FFR_S3_ENDPOINT": cfg.s3_endpoint} if cfg.s3_endpoint else {}
            stream = run_shards(pending, settings, cfg.ray, env)
        else:
            stream = _run_local(pending, settings)
        run_stats = list(_progress(stream, len(pending), cfg.progress))
    seconds = time.perf_counter() - start
    summary = summarize(cfg.output, spec, info["n_rows"], run_stats, seconds, skipped=len(done))
    summary["contact_sheets"] = (contact_sheets(cfg.output, spec, cfg.contact_sheet_size, cfg.contact_sheet_groups)
                                 if summary["accepted"] else [])
    write_json(cfg.output, "summary.json", summary)
    return summary
