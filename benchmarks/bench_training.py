"""Training throughput: the Ray Train loop (1 and 2 workers) vs a plain single-process torch loop.

Same data (colored-digits, decoded once into RAM), same model (small-cnn), same batch size and optimizer.
Steady-state samples/s are measured over the epochs after the first (warm-up), inside the loop; end-to-end
samples/s divide all training draws by the whole wall time (Ray: worker start-up, checkpoints, validation).
Ratios are Ray / plain; the machine's cores are shared the same way (1 worker × all CPUs, 2 workers × half).

Per-run overhead: the wall time of one whole small run (data, training, per-epoch validation and checkpoints,
final evaluation) through ``run_experiment`` with ``executor: ray-train`` and ``executor: local``, minus the
plain loop's wall time for the same epochs (data included). It is what each of the demo grid's 45 runs pays.

    .venv/bin/python benchmarks/bench_training.py [--epochs 4] [--width 32] [--batch-size 128]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch


def _config(args, storage: str, workers: int, cpus: int) -> dict:
    return {"dataset": "colored-digits", "dataset_options": {"bias_ratio": 0.95}, "variant": "none", "method": "erm",
            "backbone": "small-cnn", "backbone_options": {"width": args.width}, "pretrained": None, "image_size": 32,
            "epochs": args.epochs, "batch_size": args.batch_size, "lr": 1e-3, "cache_in_memory": True,
            "storage_path": storage, "num_workers": workers, "cpus_per_worker": cpus, "max_failures": 0,
            "controller_failure_limit": 1, "run_name": f"bench-{workers}w"}


def plain_torch_loop(args) -> tuple[float, float]:
    """The bare loop anyone would write: shuffled DataLoader over in-RAM tensors, CE loss, Adam."""
    from ffr.backbones import Preprocessing, create_backbone
    from ffr.datasets import create
    from ffr.training.loop import image_dataset

    train = image_dataset(create("colored-digits", bias_ratio=0.95)["train"], Preprocessing(32), in_memory=True)
    torch.manual_seed(0)
    model = create_backbone("small-cnn", 2, pretrained=None, width=args.width)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
    batches = torch.utils.data.DataLoader(train, batch_size=args.batch_size, shuffle=True)
    per_epoch, started = [], time.perf_counter()
    for _ in range(args.epochs):
        t, seen = time.perf_counter(), 0
        model.train()
        for x, y, *_ in batches:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += len(y)
        per_epoch.append(seen / (time.perf_counter() - t))
    total = time.perf_counter() - started
    return float(np.mean(per_epoch[1:] or per_epoch)), args.epochs * len(train) / total


def ray_train_loop(args, workers: int) -> tuple[float, float]:
    from ffr import runs
    from ffr.training import plan
    from ffr.training.config import method_stage, parse
    from ffr.training.data import load_experiment_data
    from ffr.training.ray_train import fit_stage

    storage = tempfile.mkdtemp(prefix="bench-training-")
    cpus = max(1, (os.cpu_count() or 2) // workers)
    cfg = parse(_config(args, storage, workers, cpus))
    spec = method_stage(cfg)
    directory = runs.run_dir(storage, spec.run_name)
    plan.write_plan(directory, load_experiment_data(cfg), spec.stage)
    started = time.perf_counter()
    fit_stage(cfg, spec, storage, directory, plan=plan.plan_path(directory))
    total = time.perf_counter() - started
    records = runs.read_metrics(directory)
    steady = [r["train_samples_per_s"] for r in records[1:]] or [records[0]["train_samples_per_s"]]
    return float(np.mean(steady)), sum(r["train_draws"] for r in records) / total


def run_overhead(args) -> dict[str, float]:
    """Seconds of one whole run: the plain loop (data included) and run_experiment with each executor."""
    from ffr.training import run_experiment

    started = time.perf_counter()
    plain_torch_loop(args)
    walls = {"plain": time.perf_counter() - started}
    for executor in ("local", "ray-train"):
        storage = tempfile.mkdtemp(prefix=f"bench-overhead-{executor}-")
        config = {**_config(args, storage, 1, max(1, os.cpu_count() or 1)), "executor": executor, "run_name": None,
                  "dataset_options": {"bias_ratio": 0.95}}
        started = time.perf_counter()
        run_experiment(config)
        walls[executor] = time.perf_counter() - started
    return walls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()

    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    print(f"cpus={os.cpu_count()} torch threads (plain)={torch.get_num_threads()} epochs={args.epochs} "
          f"small-cnn width={args.width} batch={args.batch_size}", flush=True)
    # The plain loop runs before and after the Ray runs and keeps its better numbers, so a busy moment on a
    # shared machine cannot flatter Ray.
    plain = [plain_torch_loop(args)]
    print(f"plain torch loop:      {plain[0][0]:8.0f} samples/s steady, {plain[0][1]:8.0f} end-to-end", flush=True)
    rays = {workers: ray_train_loop(args, workers) for workers in (1, 2)}
    plain.append(plain_torch_loop(args))
    print(f"plain torch loop:      {plain[1][0]:8.0f} samples/s steady, {plain[1][1]:8.0f} end-to-end", flush=True)
    plain_steady, plain_e2e = max(p[0] for p in plain), max(p[1] for p in plain)
    for workers, (steady, e2e) in rays.items():
        print(f"Ray Train, {workers} worker(s): {steady:8.0f} samples/s steady, {e2e:8.0f} end-to-end | "
              f"ratio vs plain: steady {steady / plain_steady:.2f}, end-to-end {e2e / plain_e2e:.2f}", flush=True)
    walls = run_overhead(args)
    print(f"one whole run ({args.epochs} epochs): plain loop {walls['plain']:.1f} s | "
          + " | ".join(f"executor {e}: {walls[e]:.1f} s, overhead {walls[e] - walls['plain']:+.1f} s"
                       for e in ("local", "ray-train")), flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
