"""A fixed grid of experiments run side by side as the trials of one Ray Tune run (no search, no scheduler).

Each trial runs a *chain* of training configs in order (``ffr.training.run_experiment`` each), so runs that
share a stage sit in one trial: FFR's stage 1 is trained once, by the chain's first config, and found
finished by the others (two trials reaching the same stage at once would be correct, one waiting on the other's
lease, ffr/training/stage_lease.py, but the waiting trial would hold a slot idle).
Run names come from the configs' content, so rerunning the grid skips finished runs. Used by ``ffr demo``;
with ``executor: local`` each trial trains in its own process and the grid pays no Ray Train start-up.
"""

from __future__ import annotations

from typing import Any

from ray import tune

from ffr.errors import FFRError
from ffr.ray_session import ensure_ray, quiet_tune_console
from ffr.storage import pyarrow_filesystem


def _run_chain(params: dict[str, Any]) -> None:
    from ffr.training import run_experiment

    done = 0
    for config in params["chain"]:
        run_experiment(config)
        done += 1
    tune.report({"experiments_done": done})


def _create_tracking_stores(configs: list[dict[str, Any]]) -> None:
    """Create each MLflow store and experiment the runs log to, once, here: concurrent trials creating one
    sqlite store would race in its schema migration."""
    from ffr import tracking
    from ffr.training.config import parse

    stores = {(tracking.tracking_uri(cfg.mlflow, cfg.storage_path), cfg.mlflow.experiment_name or cfg.dataset)
              for cfg in map(parse, configs)}
    for uri, experiment in sorted(stores - {(None, name) for _, name in stores}):
        tracking.experiment_id(uri, experiment)


def run_grid(chains: list[list[dict[str, Any]]], name: str, storage_path: str, max_concurrent: int = 2,
             cpus_per_trial: float = 1.0) -> None:
    """Run every chain as one Tune trial, ``max_concurrent`` at a time; raises FFRError naming failed trials."""
    if not chains or not all(chains):
        raise FFRError("a grid needs at least one chain, and every chain at least one training config")
    from ffr.training.config import resolve_paths

    # Paths against the directory the grid was started in, here: each trial runs in its own trial folder.
    chains = [[resolve_paths(config) for config in chain] for chain in chains]
    _create_tracking_stores([config for chain in chains for config in chain])
    ensure_ray()
    pa_fs, tune_path = pyarrow_filesystem(storage_path)
    tuner = tune.Tuner(
        tune.with_resources(_run_chain, {"cpu": cpus_per_trial}),
        param_space={"chain": tune.grid_search(chains)},
        # reuse_actors: a trial process keeps torch and the datasets' imports warm for the next chain.
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent, reuse_actors=True),
        run_config=tune.RunConfig(name=name, storage_path=tune_path, storage_filesystem=pa_fs, verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=0)),
    )
    with quiet_tune_console():
        results = tuner.fit()
    failed = [f"{r.path.rstrip('/').rsplit('/', 1)[-1]}: {str(r.error).splitlines()[0][:160]}"
              for r in results if r.error is not None]
    if failed:
        raise FFRError(f"{len(failed)} of {len(results)} grid trials failed: {'; '.join(failed)}")
    unfinished = sum(1 for r in results if (r.metrics or {}).get("experiments_done") != len(r.config["chain"]))
    if unfinished:  # e.g. Ctrl-C: Tune returns normally with the trials it stopped
        raise FFRError(f"{unfinished} of {len(results)} grid trials did not finish (interrupted?); "
                       "rerun the same command to resume: finished runs are not trained again")
