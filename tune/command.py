"""``ffr sweep --config FILE [key=value ...]``: a Ray Tune sweep of stage-2 methods, tracked in MLflow.

Exits 0 when every trial finished or was stopped early by its scheduler (ASHA), 1 when any trial failed
(one line names them, with a user error's own one-line message; Tune printed their tracebacks above), 2 on a
bad config (before Ray starts)."""

from __future__ import annotations

import argparse
import sys

from ffr.config import add_config_arguments, load_config
from ffr.cost import add_dry_run_arguments

EXAMPLES = """\
Every trial is one ffr run under STORAGE_PATH/NAME/ (ffr report reads that folder), tracked in MLflow; ASHA
stops weak trials early, and a trial that trains all its epochs is test-evaluated. Exits 0 when no trial
failed, 1 when one did, 2 on a bad config (before Ray starts).

examples:
  ffr sweep --config configs/sweep-colored-digits.yaml                            # offline, CPU
  ffr sweep --config configs/sweep-colored-digits.yaml 'methods=[erm, groupdro]' 'seeds=[0, 1]' train.epochs=4
  ffr sweep --config configs/sweep-ablation-colored-digits.yaml train.synthetic_root=demo_out/synthetic/seed-0
  ffr sweep --config configs/sweep-colored-digits.yaml --show-config
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p, "sweep config YAML (see configs/sweep-*.yaml)",
                         "overrides, e.g. num_samples=4 train.epochs=5")
    add_dry_run_arguments(p, "the trials, their runs and epochs, per-group training counts")


def run(args: argparse.Namespace) -> int:
    from ffr.storage import absolute, join
    from ffr.tracking import ui_line
    from tune.sweep import METRIC, parse_sweep, run_sweep, tracking_uri_for

    cfg = parse_sweep(load_config(args.config, args.overrides))
    if args.show_config:  # the sweep's own keys, then the base training config every trial starts from
        from ffr.config import format_config
        from ffr.training.config import TrainConfig, option_rows, parse
        from tune.sweep import SweepConfig, base_train_config

        print(format_config(SweepConfig, cfg))
        train = parse(base_train_config(cfg))
        print("\n" + format_config(TrainConfig, train, "train.", expand=option_rows(train, "train.")))
        return 0
    if args.dry_run:
        from ffr.cost import Throughput
        from ffr.training.cost import estimate_training
        from tune.sweep import trial_configs

        configs, notes = trial_configs(cfg)
        title = f"ffr sweep --dry-run: {cfg.name}, {len(configs)} trials; nothing is started or written"
        estimate = estimate_training(configs, args.gpu, Throughput.load(args.throughput), title)
        estimate.notes += notes
        if estimate.gpu_hours is not None:  # trials run max_concurrent_trials at a time
            estimate.wall_hours = estimate.gpu_hours / max(1, cfg.max_concurrent_trials * configs[0].get(
                "num_workers", 1))
        print(estimate.render())
        return 0
    table = run_sweep(cfg)
    shown = [c for c in ("run_name", "status", "epochs_run", METRIC, "test_worst_group_acc") if c in table]
    shown += [c for c in table.columns if c.startswith(("train.", "hp."))]
    print(table[shown].to_string(index=False))
    finished = table[table["status"] == "finished"].dropna(subset=["test_worst_group_acc"])
    if not finished.empty:
        by_method = finished.groupby("method")[[METRIC, "test_worst_group_acc"]].agg(["mean", "max", "count"])
        print("\nfinished trials by method (worst-group accuracy):\n" + by_method.to_string())
    counts = table["status"].value_counts().to_dict()
    print(f"\n{len(table)} trials: {counts.get('finished', 0)} finished, {counts.get('stopped', 0)} stopped early "
          f"by {cfg.scheduler.type.upper()}, {counts.get('error', 0)} failed")
    print(f"report: ffr report {join(absolute(cfg.storage_path), cfg.name)}")
    print(ui_line(tracking_uri_for(cfg)))
    failed = table[table["status"] == "error"]
    if not failed.empty:
        names = ", ".join(f"{r.run_name} ({r.error})" for r in failed.itertuples())
        print(f"ffr sweep: {len(failed)} of {len(table)} trials failed: {names}", file=sys.stderr)
        return 1
    return 0
