"""``ffr demo``: the embedded offline end-to-end run, on colored digits (no downloads, CPU is enough).

1. Real side: scikit-learn's handwritten digits on red/green backgrounds, biased by FFR's bias-ratio rule.
2. Synthetic side: the ``colored-digits`` recipe rendered by the procedural backend through the Ray Data
   job, as many images per group as the USB/ASB/FFR budgets of that real training set need.
3. Training on Ray Train: every variant (none / usb / asb / ffr) × every method asked for (default ERM and
   GroupDRO), model selection by validation worst-group accuracy.
4. ``ffr report``: one table and plots of test worst-group accuracy per variant and method.

Everything lands under ``--out``; rerunning the same command resumes (finished runs are not retrained).
"""

from __future__ import annotations

import argparse
import os
import time

from ffr.balance import SYNTHETIC_MODES, synthetic_counts
from ffr.groups import group_counts

DEFAULT_VARIANTS = ("none", "usb", "asb", "ffr")
DEFAULT_METHODS = ("erm", "groupdro")


def synthetic_budget(real_train_counts: dict[tuple[int, int], int]) -> dict[str, int]:
    """Per group, the most images any variant draws: max over USB, ASB and FFR budgets (as {"y,b": n})."""
    budgets = [synthetic_counts(real_train_counts, mode) for mode in SYNTHETIC_MODES]
    return {f"{y},{b}": max(bud[(y, b)] for bud in budgets) for (y, b) in real_train_counts}


def run_demo(out: str, bias_ratio: float = 0.95, seed: int = 0, epochs: int = 8, stage1_epochs: int = 4,
             variants: tuple[str, ...] = DEFAULT_VARIANTS, methods: tuple[str, ...] = DEFAULT_METHODS,
             num_workers: int = 1) -> str:
    """Run the whole demo; returns the path of the written report.md."""
    import pipelines
    from ffr import datasets
    from ffr.ray_session import ensure_ray
    from ffr.report import collect, render_text, runs_table, write_report
    from ffr.training import run_experiment

    started = time.perf_counter()
    out = os.path.abspath(out)
    dataset_options = {"bias_ratio": bias_ratio, "seed": seed}
    real = datasets.create("colored-digits", **dataset_options)
    counts = group_counts(real["train"].y, real["train"].b)
    print(f"[demo] real train groups (class, bias) → count: {counts}", flush=True)

    ensure_ray()
    synthetic_root = os.path.join(out, "synthetic")
    if any(v != "none" for v in variants):
        budget = synthetic_budget(counts)
        print(f"[demo] generating synthetic images per group: {budget}", flush=True)
        summary = pipelines.generate({"recipe": {"name": "colored-digits"}, "output": synthetic_root, "seed": seed,
                                      "budget": {"per_group": budget}, "shard_size": 500, "batch_size": 64})
        print(f"[demo] generation: {summary['accepted']} images, {summary['images_per_s']:.0f} img/s",
              flush=True)

    runs_root = os.path.join(out, "runs")
    for variant in variants:
        for method in methods:
            print(f"[demo] training variant={variant} method={method}", flush=True)
            run_experiment({
                "dataset": "colored-digits", "dataset_options": dataset_options, "variant": variant,
                "synthetic_root": synthetic_root if variant != "none" else None,
                "method": method, "seed": seed, "backbone": "small-cnn", "pretrained": None,
                "image_size": 32, "optimizer": "adam", "lr": 1e-3, "weight_decay": 1e-5, "epochs": epochs,
                "batch_size": 128, "stage1": {"epochs": stage1_epochs, "lr": 1e-3},
                "storage_path": runs_root, "num_workers": num_workers, "cache_in_memory": True,
            })

    records = collect([runs_root])
    print(render_text(runs_table(records)), flush=True)
    write_report(records, [runs_root], os.path.join(out, "report"))
    report = os.path.join(out, "report", "report.md")
    print(f"[demo] done in {time.perf_counter() - started:.0f} s; report: {report}", flush=True)
    return report


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo_out", help="output folder (local path or s3://)")
    p.add_argument("--bias-ratio", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=8, help="stage-2 (and single-stage) epochs")
    p.add_argument("--stage1-epochs", type=int, default=4, help="FFR stage-1 epochs on synthetic data")
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    p.add_argument("--num-workers", type=int, default=1, help="Ray Train workers per run")


def run(args: argparse.Namespace) -> int:
    run_demo(args.out, args.bias_ratio, args.seed, args.epochs, args.stage1_epochs,
             tuple(v for v in args.variants.split(",") if v), tuple(m for m in args.methods.split(",") if m),
             args.num_workers)
    return 0
