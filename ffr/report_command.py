"""``ffr report RUNS_ROOT... [--select RULE] [--out DIR]``: the command over :mod:`ffr.report`.

Its own module so that ``ffr report --help`` imports neither pandas nor the plotting stack: the tables are
built only when the command runs.
"""

from __future__ import annotations

import argparse

from ffr.runs.protocol import DEFAULT_SELECTION, SELECTIONS

EXAMPLES = """\
Per dataset: the paper table (method × variant, test worst-group accuracy mean ± std over seeds, n), then one
row per run and its settings. Runs that differ only in their seed are averaged; nothing else is.

examples:
  ffr report runs                                    # every run under ./runs (train's default storage_path)
  ffr report runs/sweeps/colored-digits-stage2 --out report/
  ffr report demo_out/runs s3://my-bucket/runs --out s3://my-bucket/report
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="RUNS_ROOT",
                        help="run directories or folders holding them (searched recursively; local or s3://)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="also write report.md, report.csv, protocol.csv/.md/.tex and PNG plots here "
                             "(local or s3://)")
    parser.add_argument("--select", default=DEFAULT_SELECTION, choices=SELECTIONS,
                        help="which setting (lr, weight decay, method hyperparameters...) each dataset × variant "
                             "× method × bias-ratio cell reports: val-wga = best mean validation WGA over seeds "
                             "(FFR's rule, default); val-worst-class = best validation worst-class accuracy (no "
                             "group labels); oracle = best test WGA (labelled as such); none = every setting")


def run(args: argparse.Namespace) -> int:
    from ffr.report import collect, render_text, runs_table, write_report
    from ffr.runs.protocol import select

    records = collect(args.paths)
    print(render_text(runs_table(records), select(records, args.select), args.select, records))
    if args.out:
        written = write_report(records, args.paths, args.out, args.select)
        print(f"\nwrote {len(written)} files to {args.out}: {', '.join(w.rsplit('/', 1)[-1] for w in written)}")
    return 0
