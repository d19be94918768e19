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

from ffr.config import add_show_config, load_config

EXAMPLES = """\
Plans every run first and prints how many are left to train; rerunning the same command resumes. Ends with the
protocol table of each dataset entry (the setting `select` picks, mean ± std over seeds).

examples:
  ffr study --config configs/study-colored-digits.yaml                 # offline, CPU (needs the demo's synthetic sets)
  ffr study --config configs/study-colored-digits.yaml seeds=[0,1] max_concurrent_trials=4
  ffr study --config configs/study-ffr-celeba-hq.yaml --show-config     # every key: default, value
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="study config YAML (see configs/study-*.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="overrides, e.g. seeds=[0,1] max_concurrent_trials=4 train.epochs=5")
    add_show_config(p)


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
