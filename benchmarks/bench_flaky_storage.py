"""Generation through flaky object storage: the same procedural run with and without 10 % connection resets.

A local moto S3 server sits behind :class:`ffr.testing.fault_proxy.FaultProxy`; the Ray actors and the driver
reach S3 only through the proxy. Run A: the proxy injects nothing (same path, same hops). Run B: it resets
``--reset-rate`` of requests. Prints, for each: wall time, the retries ffr counted (summary.json's
``storage_retries``), what the proxy injected, and the exactly-once check (duplicates / missing ids against the
manifest plan); then B's wall time over A's.

    .venv/bin/python benchmarks/bench_flaky_storage.py --n 20000
"""

from __future__ import annotations

import argparse
import os
import socket
import time


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(output: str, n: int, shard_size: int, actors: int, endpoint: str) -> dict:
    return {"recipe": "colored-digits", "output": output, "budget": {"per_group": n // 4}, "shard_size": shard_size,
            "batch_size": 64, "progress": False, "contact_sheet_size": 4, "s3_endpoint": endpoint,
            "ray": {"min_actors": actors, "max_actors": actors}}


def _exactly_once(output: str, config: dict) -> tuple[int, int, int]:
    """(rows, duplicate ids, planned ids missing)."""
    from ffr.shards import read_metadata
    from pipelines.api import plan

    meta = read_metadata(output, accepted_only=False)
    planned = set(plan(config)["id"])
    return len(meta), int(meta["id"].duplicated().sum()), len(planned - set(meta["id"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="images per run")
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--reset-rate", type=float, default=0.10)
    args = parser.parse_args()

    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_DEFAULT_REGION": "us-east-1", "RAY_USAGE_STATS_ENABLED": "0"})
    from ffr.testing.fault_proxy import FaultProxy

    proxy = FaultProxy(("127.0.0.1", port), reset_rate=0.0, seed=11).start()
    os.environ["FFR_S3_ENDPOINT"] = proxy.endpoint  # driver and (inherited) Ray workers: only through the proxy

    import ray

    import pipelines
    from ffr.storage import filesystem

    fs, _ = filesystem("s3://bench")
    fs.mkdir("bench")
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    rows = []
    try:
        for label, rate in (("no faults", 0.0), (f"{args.reset_rate:.0%} resets", args.reset_rate)):
            output = f"s3://bench/{label.replace(' ', '-').replace('%', 'pct')}"
            config = _config(output, args.n, args.shard_size, args.actors, proxy.endpoint)
            before = (proxy.injected.requests, proxy.injected.resets)
            proxy.reset_rate = rate
            start = time.perf_counter()
            summary = pipelines.generate(config)
            seconds = time.perf_counter() - start
            proxy.reset_rate = 0.0  # check through a healthy path
            n_rows, dups, missing = _exactly_once(output, config)
            rows.append({"run": label, "seconds": seconds, "retries": summary["storage_retries"],
                         "requests": proxy.injected.requests - before[0], "resets": proxy.injected.resets - before[1],
                         "rows": n_rows, "duplicates": dups, "missing": missing, "complete": summary["complete"]})
    finally:
        ray.shutdown()
        proxy.stop()
        server.stop()
    print(f"{args.n} procedural images, {args.actors} actors, shards of {args.shard_size}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (shared machine: noisy)")
    for r in rows:
        print(f"  {r['run']:<12} {r['seconds']:7.1f} s  retries counted {r['retries']:4d} "
              f"(summary.json)  proxy: {r['resets']} resets of {r['requests']} requests  "
              f"rows {r['rows']}  duplicates {r['duplicates']}  missing {r['missing']}  complete {r['complete']}")
    print(f"wall time with faults / without: {rows[1]['seconds'] / rows[0]['seconds']:.2f}")


if __name__ == "__main__":
    main()
