"""``ffr study --config FILE [key=value ...]``: a paper grid as one Ray Tune run, then its protocol table.

Prints, before anything starts, how many runs the study has and how many are left to train (``tune.study``);
then trains them (FFR's stage-1 runs first, each stage-2 run once its stage 1 is done); then, per entry of
``datasets``, ``ffr report``'s paper table, protocol table (``select``, default val-wga) and (B, G) diagnostic.
Rerunning the same command resumes. Exits 0 when every run finished, 1 when any failed (one line names them),
2 on a bad config (before Ray starts).
"""

from __future__ import annotations

import argparse
import sys

from ffr.config import add_config_arguments, load_config
from ffr.cost import add_dry_run_arguments

EXAMPLES = """\
Plans every run first and prints how many are left to train; rerunning the same command resumes. Ends with the
protocol table of each dataset entry (the setting `select` picks, mean ± std over seeds).

examples:
  ffr study --config configs/study-colored-digits.yaml                 # offline, CPU (needs the demo's synthetic sets)
  ffr study --config configs/study-colored-digits.yaml seeds=[0,1] max_concurrent_trials=4
  ffr study --config configs/study-ffr-celeba-hq.yaml --show-config     # every key: default, value
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p, "study config YAML (see configs/study-*.yaml)",
                         "overrides, e.g. seeds=[0,1] max_concurrent_trials=4 train.epochs=5")
    add_dry_run_arguments(p, "the runs left to train, their epochs and per-group training counts")


def cost_line(plan, gpu: str | None = None, throughput: str | None = None):
    """(the one line printed before a study starts, the full estimate): GPU-hours of the runs left to train, from
    the cost preview's throughput table (ffr/throughput.yaml), as ``ffr train --dry-run`` computes them."""
    from ffr.cost import CPU, Throughput
    from ffr.training.cost import estimate_training

    todo = plan.to_train
    if not todo:
        return "estimated cost: nothing left to train", None
    # a stage-1 job's config is any experiment on top of it: estimating that experiment counts its stage 1 too,
    # and the estimator counts a run shared by several configs once
    estimate = estimate_training([j.train for j in todo], gpu, Throughput.load(throughput),
                                 f"ffr study --dry-run: {plan.name}, {len(todo)} runs to train; nothing is started")
    if estimate.gpu_hours is None:
        return "estimated cost: unknown (" + "; ".join(estimate.notes[-1:]) + ")", estimate
    unit = "CPU-hours" if estimate.gpu == CPU else f"GPU-hours on {estimate.gpu}"
    return (f"estimated cost: {estimate.gpu_hours:.2f} {unit} for {estimate.n_runs} runs, {estimate.epochs} epochs "
            "(ffr/throughput.yaml; --dry-run for the breakdown, --gpu TYPE for another GPU)"), estimate


def run(args: argparse.Namespace) -> int:
    from ffr.report import protocol_text
    from ffr.runs.protocol import select
    from ffr.tracking import tracking_uri, ui_line
    from tune.study import count_line, parse_study, plan_study, records_by_entry, run_study

    cfg = parse_study(load_config(args.config, args.overrides))
    if args.show_config:
        from ffr.config import format_config
        from tune.study import StudyConfig

        print(format_config(StudyConfig, cfg))
        return 0
    plan = plan_study(cfg)
    print(count_line(plan), flush=True)
    line, estimate = cost_line(plan, args.gpu, args.throughput)
    if args.dry_run:
        print(estimate.render() if estimate is not None else line)
        return 0
    print(line, flush=True)
    table = run_study(cfg, plan)
    for label, records in records_by_entry(plan).items():
        print("\n" + protocol_text(select(records, cfg.select), cfg.select, title=label), flush=True)
    counts = table["status"].value_counts().to_dict()
    print(f"\n{len(table)} runs: {counts.get('finished', 0)} finished, {counts.get('failed', 0)} failed, "
          f"{counts.get('skipped', 0)} not started (their stage-1 run failed)")
    print(f"report: ffr report {plan.folder} --select {cfg.select}")
    print(ui_line(tracking_uri(cfg.mlflow, cfg.storage_path)))
    failed = table[table["status"] != "finished"]
    if not failed.empty:
        names = ", ".join(f"{r.run_name} ({r.error})" for r in failed.itertuples())
        print(f"ffr study: {len(failed)} of {len(table)} runs did not finish: {names}", file=sys.stderr)
        return 1
    return 0
