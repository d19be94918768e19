"""Scale: N procedural images (default 100,000) through the full Ray Data job, to local disk and to S3.

The S3 target is a moto server this script starts in its own process (loopback, dummy credentials), so
its memory is not counted as ours. Prints wall time, images/s, peak RSS of the driver and the largest
Ray worker, and peak PSS (shared pages split, so sums are honest) of all workers and of the whole tree.
Goal: flat memory, < 3 GB peak in total.

    .venv/bin/python benchmarks/bench_generation_100k.py --n 100000
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))

from _gen_common import MemorySampler, steady_rate  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_moto() -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-c", "from moto.server import main; main()", "-H", "127.0.0.1",
                             "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, endpoint
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("moto server did not start") from None
            time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--targets", default="local,s3", help="comma-separated: local, s3")
    args = parser.parse_args()

    moto, endpoint = _start_moto()
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",  # before Ray starts workers
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint, "FFR_S3_ENDPOINT": endpoint})
    import ray

    import pipelines
    from ffr.storage import filesystem

    try:
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        fs, _ = filesystem("s3://bench")
        fs.mkdir("bench")
        with tempfile.TemporaryDirectory() as tmp:
            roots = {"local": os.path.join(tmp, "out"), "s3": "s3://bench/out"}
            for target in args.targets.split(","):
                root = roots[target]
                config = {"recipe": "colored-digits", "output": root, "budget": {"per_group": args.n // 4},
                          "shard_size": args.shard_size, "batch_size": 64, "progress": False,
                          "ray": {"min_actors": args.actors, "max_actors": args.actors}}
                start = time.perf_counter()
                with MemorySampler(os.getpid(), exclude={moto.pid}) as mem:
                    summary = pipelines.generate(config)
                wall = time.perf_counter() - start
                assert summary["complete"] and summary["rows_done"] == args.n // 4 * 4, summary
                p = mem.peak
                print(f"{target:>5}: {summary['rows_done']} images, wall {wall:.1f} s "
                      f"(job {summary['seconds']:.1f} s), "
                      f"{summary['images_per_s']:.1f} img/s end-to-end, {steady_rate(root):.1f} img/s steady | "
                      f"peak RSS driver {p['driver_mb']:.0f} MB, largest worker {p['max_worker_mb']:.0f} MB; "
                      f"peak PSS Ray workers {p['workers_total_mb']:.0f} MB, whole tree {p['tree_total_mb']:.0f} MB",
                      flush=True)
    finally:
        ray.shutdown()
        moto.kill()
        moto.wait()


if __name__ == "__main__":
    main()
