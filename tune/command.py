"""``ffr sweep --config FILE [key=value ...]``: a Ray Tune sweep of stage-2 methods, tracked in MLflow."""

from __future__ import annotations

import argparse

from ffr.config import add_show_config, load_config


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="sweep config YAML (see configs/sweep-*.yaml)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. num_samples=4 train.epochs=5")
    add_show_config(p)


def run(args: argparse.Namespace) -> int:
    from tune.sweep import METRIC, parse_sweep, run_sweep

    cfg = parse_sweep(load_config(args.config, args.overrides))
    if args.show_config:  # the sweep's own keys, then the base training config every trial starts from
        from ffr.config import format_config
        from ffr.training.config import TrainConfig, parse
        from tune.sweep import SweepConfig, base_train_config

        print(format_config(SweepConfig, cfg))
        print("\n" + format_config(TrainConfig, parse(base_train_config(cfg)), "train."))
        return 0
    table = run_sweep(cfg)
    with_metric = table.dropna(subset=[METRIC]) if METRIC in table else table.iloc[0:0]
    print(table.to_string(index=False))
    if not with_metric.empty:
        by_method = with_metric.groupby("method")[METRIC].agg(["mean", "max", "count"])
        print("\nvalidation worst-group accuracy by method:\n" + by_method.to_string())
    failed = int(table["error"].notna().sum()) if "error" in table else 0
    if failed:
        print(f"{failed} trial(s) failed; see the errors above")
    return 1 if failed == len(table) else 0
