"""Pipeline overhead: images/s of the Ray Data job vs a bare Python loop over the same procedural backend.

Both run the same :class:`pipelines.worker.ShardWorker` on the same manifest (render → filter → PNG →
shard write); the bare loop calls it in this process, the Ray job through ``map_batches`` over an actor
pool on a local cluster with ``--cpus`` CPUs. Prints end-to-end and steady-state (after the first shard,
i.e. without actor start-up) rates and their ratios. Goal: steady ratio ≥ 0.95 with one actor.

    .venv/bin/python benchmarks/bench_generation_overhead.py --n 20000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))

from _gen_common import steady_rate  # noqa: E402


def _config(root: str, n: int, shard_size: int, runner: str, actors: int) -> dict:
    return {"recipe": "colored-digits", "output": root, "budget": {"per_group": n // 4}, "shard_size": shard_size,
            "batch_size": 64, "runner": runner, "progress": False, "contact_sheet_size": 4,
            "ray": {"min_actors": actors, "max_actors": actors}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="images per run")
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    args = parser.parse_args()

    import ray

    import pipelines

    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs = [("bare loop", "local", 1), ("ray, 1 actor", "ray", 1), (f"ray, {args.cpus} actors", "ray", args.cpus)]
        for label, runner, actors in runs:
            root = os.path.join(tmp, label.replace(" ", "_").replace(",", ""))
            start = time.perf_counter()
            summary = pipelines.generate(_config(root, args.n, args.shard_size, runner, actors))
            wall = time.perf_counter() - start
            results[label] = {"end_to_end": summary["images_per_s"], "steady": steady_rate(root), "wall": wall}
            print(f"{label:>16}: {summary['images_per_s']:8.1f} img/s end-to-end (job {summary['seconds']:.1f} s), "
                  f"{results[label]['steady']:8.1f} img/s steady; call incl. manifest+review {wall:.1f} s", flush=True)
    bare = results["bare loop"]
    print(f"\nn={args.n} shard_size={args.shard_size} cpus={args.cpus}")
    for label, r in results.items():
        if label != "bare loop":
            print(f"ratio {label} / bare loop: end-to-end {r['end_to_end'] / bare['end_to_end']:.3f}, "
                  f"steady {r['steady'] / bare['steady']:.3f}")
    ray.shutdown()


if __name__ == "__main__":
    main()
