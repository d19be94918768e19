"""``pipelines.generate(config) -> summary``: the one entry point behind ``ffr generate`` and the demo.

recipe → manifest rounds → pending shards → workers (Ray actor pool, or in-process) → shards, until every
group has its budget of accepted images; then ``groups.json``, ``config.json``, contact sheets and
``summary.json``. A rerun with the same config and output skips complete shards; a larger budget extends
the output with new ids; any other change that alters images is refused, naming the keys, before anything
is written.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pandas as pd

from ffr.config import dump_config, to_dict
from ffr.errors import FFRError, unwrap_user_errors
from ffr.shards import complete_shards, read_stats, write_groups
from ffr.storage import ensure_dir, filesystem, join, storage_retries
from pipelines.budget import extra_rows, group_budgets
from pipelines.config import GenerateConfig, identity_diff, normalize, run_identity, to_config
from pipelines.manifest import (
    append_round,
    build_manifest,
    check_compatible,
    check_generator,
    effective_generator,
    new_info,
    read_manifest_info,
    write_info,
)
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


def resolve_paths(config: "GenerateConfig | dict[str, Any]", base: str | None = None) -> dict[str, Any]:
    """The config as a dict with every path a user gave made absolute against ``base`` (default: the directory
    the command was started in): ``output``, the recipe's and the backend's path options (ffr.options.PathField:
    recipe files, guide roots, class tables, fonts, a local model directory) and the CLIP model. Done once, on
    the driver, before Ray starts: Ray Data actors run in another working directory. URIs and hub ids stay."""
    import copy

    from ffr.options import looks_like_path
    from ffr.storage import absolute, resolve_option_paths
    from pipelines.backends import BACKENDS
    from pipelines.recipes import RECIPES

    data = copy.deepcopy(to_dict(config) if isinstance(config, GenerateConfig) else normalize(config))
    if isinstance(data.get("output"), str) and data["output"]:
        data["output"] = absolute(data["output"], base)
    recipe, backend = data.get("recipe"), data.get("backend")
    name = recipe.get("name") if isinstance(recipe, dict) else None
    if isinstance(name, str) and name in RECIPES and isinstance(recipe.get("options"), dict):
        recipe["options"] = resolve_option_paths(RECIPES.get(name).Options, recipe["options"], base)
    backend_name = backend.get("name") if isinstance(backend, dict) else None
    if backend_name is None and isinstance(name, str) and name in RECIPES:
        backend_name = RECIPES.get(name).default_backend
    if isinstance(backend, dict) and isinstance(backend_name, str) and backend_name in BACKENDS \
            and isinstance(backend.get("settings"), dict):
        backend["settings"] = resolve_option_paths(BACKENDS.get(backend_name).Options, backend["settings"], base)
    filters = data.get("filters")
    if isinstance(filters, dict) and isinstance(filters.get("clip_model"), str):
        import os

        clip = filters["clip_model"]
        if os.path.isdir(os.path.join(base or os.getcwd(), os.path.expanduser(clip))) or looks_like_path(clip):
            filters["clip_model"] = absolute(clip, base)
    return data


def check_writable(root: str) -> None:
    """Fail in one line, before any work, when the output cannot be written (bad bucket, no credentials)."""
    fs, base = filesystem(root)
    probe = join(base, ".ffr-write-check")
    try:
        ensure_dir(fs, base)
        with fs.open(probe, "wb") as f:
            f.write(b"ok")
        fs.rm(probe)
    except Exception as e:  # noqa: BLE001 — any storage failure here is the user's setup, not a bug
        raise FFRError(f"output {root!r} is not writable: {type(e).__name__}: {str(e).splitlines()[0]}") from None


def check_before_ray(cfg: GenerateConfig, settings: WorkerSettings, recipe) -> None:
    """Everything the driver can check, before Ray starts and before anything is written: the backend's name
    and settings (and its model's existence), what the rows make against how the backend runs (e.g. CFG on a
    guidance-distilled model), the CLIP model's existence. Otherwise each would fail only inside the actors,
    after the manifest recorded the bad value. Completes ``settings`` with what the backend decides for the
    whole run (shipped to every actor, recorded in the output's identity) and the generator's label."""
    from pipelines.backends import BACKENDS
    from pipelines.model_source import check_model_source

    backend = BACKENDS.get(settings.backend)
    options = BACKENDS.options(settings.backend, settings.backend_settings, "backend.settings")
    backend.check(options)
    generator, _ = check_generator(recipe, cfg.generator)
    settings.backend_settings = {**settings.backend_settings, **backend.check_run(options, generator)}
    settings.generator = backend.generator_label(settings.backend_settings, generator)
    if settings.clip_model:
        check_model_source(settings.clip_model)


class _Runner:
    """Runs lists of shards, round after round; the local worker (a loaded model) is kept between rounds."""

    def __init__(self, cfg: GenerateConfig, settings: WorkerSettings) -> None:
        self.cfg, self.settings = cfg, settings
        self._local: ShardWorker | None = None

    def __call__(self, shards: list[int]) -> Iterator[dict[str, Any]]:
        if self.cfg.runner == "ray":
            from ffr.ray_session import ensure_ray  # Ray is imported only when the Ray runner is used
            from pipelines.job import run_shards

            ensure_ray()  # now, so Ray's start-up lines come before the progress bar, not through it
            env = {"FFR_S3_ENDPOINT": self.cfg.s3_endpoint} if self.cfg.s3_endpoint else {}
            return run_shards(shards, self.settings, self.cfg.ray, env, verbose=self.cfg.verbose)
        return self._run_local(shards)

    def _run_local(self, shards: list[int]) -> Iterator[dict[str, Any]]:
        if self._local is None:
            self._local = ShardWorker(self.settings)
        for shard in shards:
            yield self._local.process_shard(shard)


def _progress(it: Iterator[dict], total: int, enabled: bool, desc: str) -> Iterator[dict]:
    if not enabled:
        yield from it
        return
    from tqdm import tqdm

    with tqdm(total=total, unit="shard", desc=desc) as bar:
        for stats in it:
            bar.update(1)
            bar.set_postfix(accepted=stats["n_accepted"], refresh=False)
            yield stats


def _budgets(cfg: GenerateConfig, recipe) -> dict[tuple[int, int], int]:
    """Accepted images per (y, b) as the recipe assigns them (D3S ``uniform`` redraws each image's bias)."""
    return recipe.assign_budgets(group_budgets(recipe.spec(), cfg.budget), cfg.seed)


def _targets(cfg: GenerateConfig, recipe) -> dict[int, int]:
    spec = recipe.spec()
    return {spec.group_id(y, b): n for (y, b), n in _budgets(cfg, recipe).items()}


def plan(config: GenerateConfig | dict[str, Any]) -> pd.DataFrame:
    """The first round's manifest a config would generate into a new output (nothing is written)."""
    cfg = to_config(resolve_paths(config))
    recipe = create_recipe(cfg.recipe.name, cfg.recipe.options)
    manifest = build_manifest(recipe, _budgets(cfg, recipe), cfg.seed, cfg.shard_size, cfg.generator)
    if manifest.empty:
        raise FFRError("the budget asks for 0 images in every group; expected at least one image")
    return manifest


def _identity(cfg: GenerateConfig, recipe, settings: WorkerSettings) -> dict[str, Any]:
    generator, negative = effective_generator(recipe, cfg.generator)
    return run_identity(cfg, {
        "generator": {**generator, "negative_prompt": negative},
        "backend": {"name": settings.backend, "settings": settings.backend_settings},
        "filters": {"gray_threshold": settings.gray_threshold, "clip_model": settings.clip_model,
                    "clip_threshold": settings.clip_threshold}})


@unwrap_user_errors
def generate(config: GenerateConfig | dict[str, Any]) -> dict[str, Any]:
    """Generate until every group has its budget of accepted images (or extend / resume an output).

    Returns the summary also written to ``{output}/summary.json``. Round after round (pipelines/budget.py):
    run the planned shards not yet complete; when all are, plan the extra rows short groups need.
    """
    cfg = to_config(resolve_paths(config))  # paths against the launch directory, before Ray starts
    retries_before = storage_retries()  # this run's driver-side retries: from its very first storage request
    if cfg.s3_endpoint:  # before any S3 access; Ray workers get it through the job's runtime_env
        os.environ["FFR_S3_ENDPOINT"] = cfg.s3_endpoint
    recipe = create_recipe(cfg.recipe.name, cfg.recipe.options)
    spec = recipe.spec()
    targets = _targets(cfg, recipe)
    if not any(targets.values()):
        raise FFRError("the budget asks for 0 images in every group; expected at least one image")
    names = {g: spec.group_name(g) for g in range(spec.n_groups)}
    settings = _settings(cfg, recipe)
    check_before_ray(cfg, settings, recipe)
    identity = _identity(cfg, recipe, settings)
    stored = {str(g): n for g, n in sorted(targets.items())}
    check_writable(cfg.output)  # one clear line for a bad bucket or missing credentials (only a probe is written)
    info = read_manifest_info(cfg.output)
    if info is not None and identity_diff(info["identity"], identity) and not complete_shards(cfg.output):
        # No image exists under the recorded settings (e.g. a run that failed on a bad model): nothing to
        # protect, so the corrected config plans afresh instead of asking the user to delete the output.
        log.warning("output %s has no complete shard; replanning it with the new settings", cfg.output)
        info = None
    if info is not None:
        check_compatible(cfg.output, info, identity, targets, names)  # before anything is written
        if info["targets"] != stored:
            info = {**info, "targets": stored}
            write_info(cfg.output, info)
    else:  # manifest.json appears with the first round's shards
        info = {**new_info(recipe.name, identity), "targets": stored}
    from pipelines.backends import BACKENDS

    note = BACKENDS.get(settings.backend).prompt_warning(recipe)  # after every check: a bad config says one line
    if note:
        print(f"warning: {note}", file=sys.stderr, flush=True)
    recipe.prepare(cfg)  # e.g. D3S background templates, generated once beside the output
    write_groups(cfg.output, spec)
    write_json(cfg.output, "config.json", json.loads(dump_config(cfg)))  # secrets redacted
    done = set(complete_shards(cfg.output))
    skipped = len(done)
    accepted: Counter = Counter()
    for shard in done:
        accepted.update({int(g): n for g, n in read_stats(cfg.output, shard).get("accepted_per_group", {}).items()})
    run = _Runner(cfg, settings)
    run_stats: list[dict] = []
    start = time.perf_counter()
    failure: FFRError | None = None
    while True:
        pending = [s for s in range(info["n_shards"]) if s not in done]
        if not pending:
            try:
                extra = extra_rows(targets, {int(k): v for k, v in info["planned"].items()}, accepted,
                                   cfg.budget.max_factor, names)
            except FFRError as e:
                failure = e
                break
            if not extra:
                break
            planned = {int(k): v for k, v in info["planned"].items()}
            todo = {spec.decode(g)[:2]: n for g, n in extra.items()}
            manifest = build_manifest(recipe, todo, cfg.seed, cfg.shard_size, cfg.generator, start=planned,
                                      first_shard=info["n_shards"])
            info = append_round(cfg.output, info, manifest)
            pending = [s for s in range(info["n_shards"]) if s not in done]
            log.info("round %d: %d rows in %d shards", len(info["rounds"]), len(manifest), len(pending))
        desc = "generate" if len(info["rounds"]) <= 1 else f"generate (round {len(info['rounds'])})"
        for stats in _progress(run(pending), len(pending), cfg.progress, desc):
            run_stats.append(stats)
            done.add(int(stats["shard"]))
            accepted.update({int(g): n for g, n in stats.get("accepted_per_group", {}).items()})
    seconds = time.perf_counter() - start
    summary = summarize(cfg.output, spec, info, targets, run_stats, seconds, skipped=skipped)
    summary["generator"] = settings.generator
    summary["contact_sheets"] = (contact_sheets(cfg.output, spec, cfg.contact_sheet_size, cfg.contact_sheet_groups)
                                 if summary["accepted"] else [])
    # every retried object-store request of this run: the actors' (per shard) and this driver's own; with the
    # local runner the shards' retries are already in the driver's count
    from_shards = sum(int(s.get("storage_retries", 0)) for s in run_stats) if cfg.runner == "ray" else 0
    summary["storage_retries"] = from_shards + storage_retries() - retries_before
    write_json(cfg.output, "summary.json", summary)
    if failure is not None:
        raise failure
    return summary
