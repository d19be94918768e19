"""Scale: a 120K-row D3S manifest (1000 ImageNet classes × 10 backgrounds × 12) through the real job, on CPU.

The recipe is the real ``d3s-background`` (ImageNet class table, D3S prompts, stratified, guides from an
ImageNet-layout foreground folder, background templates generated once by the run's backend); only the model
is the ``compositing`` backend instead of Stable Diffusion, so the numbers measure the pipeline (plan, guides,
Ray Data job, shard writing) and not the GPU. Then the evaluation job runs over the same rows and is compared
with a plain PyTorch loop over the same model (read bytes → decode → preprocess → forward, one process).

Prints: plan time, generation images/s (wall and steady), peak memory of the driver and Ray workers with
first-half vs second-half peaks (flat memory: the two halves match), evaluation images/s and the ratio
Ray / plain loop.

    .venv/bin/python benchmarks/bench_d3s_120k.py --n 120000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))

from _gen_common import MemorySampler, steady_rate  # noqa: E402


class SeriesSampler(MemorySampler):
    """MemorySampler that also keeps the time series, to compare the first and second half of a run."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.series: list[tuple[float, float, float]] = []

    def _sample(self) -> None:
        before = dict(self.peak)
        self.peak = {k: 0.0 for k in self.peak}
        super()._sample()
        self.series.append((time.monotonic(), self.peak["driver_mb"], self.peak["max_worker_mb"]))
        self.peak = {k: max(before[k], self.peak[k]) for k in self.peak}

    def halves(self) -> dict[str, float]:
        s = self.series[len(self.series) // 10:]  # skip start-up (actors importing torch)
        mid = len(s) // 2
        first, second = s[:mid] or s, s[mid:] or s
        return {"driver_first_half_mb": max(p[1] for p in first), "driver_second_half_mb": max(p[1] for p in second),
                "worker_first_half_mb": max(p[2] for p in first), "worker_second_half_mb": max(p[2] for p in second)}


def fake_imagenet(root: Path, size: int) -> str:
    """An ImageNet train layout with one procedural foreground per class (a digit: class index mod 10)."""
    from ffr.d3s.embedded import _digit
    from pipelines.recipes.class_table import load_class_table

    table = load_class_table()
    for c, wnid in enumerate(table.wnids):
        (root / wnid).mkdir(parents=True, exist_ok=True)
        _digit(c % 10, c, size).save(root / wnid / "0.JPEG", format="JPEG", quality=90)
    return str(root)


def random_checkpoint(path: Path, size: int) -> str:
    import torch

    from ffr.backbones import create_backbone

    torch.manual_seed(0)
    model = create_backbone("small-cnn", 1000, width=16)
    torch.save({"arch": "ffr/small-cnn", "arch_options": {"width": 16}, "num_classes": 1000,
                "state_dict": model.state_dict(),
                "preprocess": {"resize": size, "crop": size, "mean": [0.5] * 3, "std": [0.25] * 3}}, path)
    return str(path)


def plain_loop(plan, spec: str, batch_size: int) -> float:
    """images/s of the simplest PyTorch loop over the same rows and model."""
    import io

    import torch
    from PIL import Image

    from ffr.d3s.models import load_classifier
    from ffr.d3s.predict import read_bytes

    model = load_classifier(spec)
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(plan), batch_size):
            b = plan.iloc[i:i + batch_size]
            blobs = read_bytes(b["path"].to_numpy(), b["offset"].to_numpy(), b["size"].to_numpy())
            x = torch.stack([model.preprocess(Image.open(io.BytesIO(d)).convert("RGB")) for d in blobs])
            model.module(x).topk(5, dim=1)
    return len(plan) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=120_000, help="rows; rounded to 1000 classes × 10 backgrounds")
    parser.add_argument("--size", type=int, default=32, help="image side (px)")
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--model", default=None, help="evaluation model spec (default: a random small-cnn checkpoint)")
    parser.add_argument("--plain-n", type=int, default=20_000, help="rows for the plain-loop reference")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out", default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--eval-only", action="store_true", help="reuse a finished --out; measure evaluation only")
    args = parser.parse_args()

    import ray

    import pipelines
    from ffr.d3s.evaluate import EvalConfig, evaluate, shard_plan
    from pipelines.api import plan as plan_manifest

    work = Path(args.out or tempfile.mkdtemp(prefix="bench_d3s_"))
    per_group = max(1, args.n // 10_000)
    fg = fake_imagenet(work / "imagenet" / "train", 64)
    config = {"recipe": {"name": "d3s-background", "options": {"foreground_root": fg, "background_templates": 4}},
              "output": str(work / "d3s"), "seed": 0, "budget": {"per_group": per_group}, "shard_size": 1000,
              "batch_size": 64, "image_format": "png", "generator": {"height": args.size, "width": args.size},
              "backend": {"name": "compositing"}, "runner": "ray", "progress": False,
              "ray": {"min_actors": args.actors, "max_actors": args.actors}, "contact_sheet_groups": 10}
    start = time.perf_counter()
    manifest = plan_manifest(config)
    plan_s = time.perf_counter() - start
    print(f"plan: {len(manifest)} rows in {plan_s:.1f} s ({len(manifest) / plan_s:,.0f} rows/s)", flush=True)

    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    if not args.eval_only:
        with SeriesSampler(os.getpid(), interval=1.0) as mem:
            start = time.perf_counter()
            summary = pipelines.generate(config)
            gen_s = time.perf_counter() - start
        rate = summary["accepted"] / gen_s
        print(f"generate: {summary['accepted']} images in {gen_s:.0f} s = {rate:.0f} images/s wall, "
              f"{steady_rate(config['output']):.0f} images/s steady", flush=True)
        print("memory (MB): " + ", ".join(f"{k} {v:.0f}" for k, v in {**mem.peak, **mem.halves()}.items()),
              flush=True)

    spec = args.model or f"checkpoint:{random_checkpoint(work / 'small-cnn-random.pt', args.size)}"
    cfg = EvalConfig(data=config["output"], models=[spec], output=str(work / "eval"), batch_size=args.batch_size,
                     min_actors=args.actors, max_actors=args.actors)
    plan = shard_plan(cfg).iloc[:args.plain_n]
    plain_before = plain_loop(plan, spec, args.batch_size)  # before and after: the machine's load drifts
    with SeriesSampler(os.getpid(), interval=1.0) as mem:
        start = time.perf_counter()
        result = evaluate(cfg)
        eval_s = time.perf_counter() - start
    ray_rate = result["images"] / eval_s
    plain_after = plain_loop(plan, spec, args.batch_size)
    plain_rate = (plain_before + plain_after) / 2
    print(f"plain loop: {plain_before:.0f} images/s before, {plain_after:.0f} after the Ray job", flush=True)
    steady = next(iter(result["timing"].values()))["steady_images_per_s"]
    print(f"evaluate: {result['images']} images in {eval_s:.0f} s = {ray_rate:.0f} images/s end to end (Ray Data, "
          f"{args.actors} actors, incl. start-up, tables, heatmap), {steady:.0f} images/s steady; plain loop "
          f"{plain_rate:.0f} images/s over {len(plan)} rows; ratio Ray/plain = {ray_rate / plain_rate:.2f} end to "
          f"end, {steady / plain_rate:.2f} steady", flush=True)
    print("memory (MB): " + ", ".join(f"{k} {v:.0f}" for k, v in {**mem.peak, **mem.halves()}.items()), flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
