"""``ffr train --config FILE [key=value ...]``: one experiment (both stages for the ffr variant)."""

from __future__ import annotations

import argparse
import json

from ffr.config import add_config_arguments, build, format_config, load_config
from ffr.cost import add_dry_run_arguments

EXAMPLES = """\
Trains every stage of one experiment (FFR: stage 1 on balanced synthetic images, then stage 2 on the real,
biased set) and tests the best checkpoint by validation worst-group accuracy. Paths are relative to where the
command runs; rerunning the same command resumes, or reports a finished run. executor: auto (the default)
trains in this process when the run has one CPU worker and no GPU, on Ray Train otherwise.

examples:
  ffr train --config configs/train-colored-digits-none.yaml                 # offline, CPU, about a minute
  ffr train --config configs/train-colored-digits-ffr.yaml method=groupdro seed=1
  ffr train --config configs/train-waterbirds-ffr.yaml num_workers=8 use_gpu=true executor=ray-train
  ffr train --config configs/train-colored-digits-none.yaml --show-config   # every key: default, value
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, "YAML training config (see configs/train-*.yaml)",
                         "config overrides, e.g. method=groupdro epochs=5 stage1.lr=1e-4")
    add_dry_run_arguments(parser, "per-group training counts, the runs and their epochs")


def run(args: argparse.Namespace) -> int:
    from ffr.training.config import TrainConfig, option_rows  # here, not above: `ffr train --help` stays light

    cfg = build(TrainConfig, load_config(args.config, args.overrides))
    if args.show_config:
        print(format_config(TrainConfig, cfg, expand=option_rows(cfg)))
        return 0
    if args.dry_run:
        from ffr.cost import Throughput
        from ffr.training.cost import estimate_training
        from ffr.training.experiment import check_weights

        print(estimate_training(cfg, args.gpu, Throughput.load(args.throughput)).render())
        try:  # what the real run would stop on before Ray starts
            check_weights(cfg)
        except Exception as e:  # noqa: BLE001 - reported, not raised: a preview still shows the cost
            print(f"warning: the run would stop before Ray starts: {e}")
        return 0
    from ffr.tracking import tracking_uri, ui_line
    from ffr.training import run_experiment

    result = run_experiment(cfg)
    print(ui_line(tracking_uri(cfg.mlflow, cfg.storage_path)))
    summary = {k: result[k] for k in ("run_name", "variant", "method", "best_epoch", "best_val_worst_group_acc")}
    summary["test_worst_group_acc"] = result["test"]["worst_group_acc"]
    summary["run_dir"] = f"{result['storage_path'].rstrip('/')}/{result['run_name']}"
    print(json.dumps(summary))
    return 0

