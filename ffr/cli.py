"""The one console script: ``ffr <command> ...``.

Each sub-command lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``;
the module is imported only when its command runs, so ``ffr --help`` is instant and a broken optional
dependency does not take the whole CLI down. User mistakes (:class:`FFRError`) print one line, exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ffr.errors import user_error

COMMANDS = {
    "generate": ("pipelines.command", "generate synthetic images (Ray Data over a diffusion/procedural backend)"),
    "train": ("ffr.training.command", "two-stage FFR training on Ray Train"),
    "sweep": ("tune.command", "Ray Tune sweep of stage-2 methods, tracked in MLflow"),
    "study": ("ffr.study_command", "a paper grid (datasets × bias ratios × variants × methods × hyperparameters × "
                                   "seeds) as one Ray Tune run, ending with the protocol table"),
    "report": ("ffr.report", "tables and plots from finished runs"),
    "demo": ("ffr.demo", "the embedded offline end-to-end run (colored digits)"),
    "review": ("ffr.review.command", "human review of generated images: web app, votes, veto rule, export"),
    "d3s": ("ffr.d3s.command", "D3S: shift splits, per-background evaluation of classifiers, embedded demo"),
    "balance": ("ffr.balance_command", "print FFR's downsampling and synthetic budget tables for group counts"),
}


def _load(command: str):
    module_name, _ = COMMANDS[command]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (e.name == module_name or module_name.startswith(e.name + ".")):
            return None
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ffr", description="Balanced synthetic data from diffusion models, and FFR two-stage training, on Ray.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = _load(name)
            if module is None:
                print(f"ffr {name}: not available in this build yet", file=sys.stderr)
                return 2
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print(f"ffr {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        found = user_error(e)  # an FFRError, also one raised inside a Ray actor, task, Train worker or trial
        if found is None:
            raise  # a bug: its traceback
        print(f"ffr {args.command}: error: {found}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
