"""The one console script: ``ffr <command> ...``.

Each sub-command lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``;
the module is imported only when its command runs, so ``ffr --help`` is instant and a broken optional
dependency does not take the whole CLI down. User mistakes (:class:`FFRError`) print one line, exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ffr.errors import user_error

COMMANDS = {
    "generate": ("pipelines.command", "generate synthetic images (Ray Data over a diffusion/procedural backend)"),
    "train": ("ffr.training.command", "two-stage FFR training, in this process or on Ray Train (DDP)"),
    "sweep": ("tune.command", "Ray Tune sweep of stage-2 methods, tracked in MLflow"),
    "study": ("ffr.study_command", "a paper grid (datasets × bias ratios × variants × methods × hyperparameters × "
                                   "seeds) as one Ray Tune run, ending with the protocol table"),
    "report": ("ffr.report_command", "tables and plots from finished runs"),
    "demo": ("ffr.demo", "the embedded offline end-to-end run (colored digits)"),
    "review": ("ffr.review.command", "human review of generated images: web app, votes, veto rule, export"),
    "d3s": ("ffr.d3s.command", "D3S: shift splits, per-background evaluation of classifiers, embedded demo"),
    "balance": ("ffr.balance_command", "print FFR's downsampling and synthetic budget tables for group counts"),
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and examples as written (line breaks kept); every option that has a default shows it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "%(default)" in text or not action.option_strings or default is None or default is False \
                or default == argparse.SUPPRESS:
            return text
        return f"{text} (default: %(default)s)"


def _document(parser: argparse.ArgumentParser, description: str, examples: str | None) -> None:
    """Every command's help: a description, its examples, its defaults; the same for its sub-actions
    (``ffr d3s demo --help``), whose description is their one-line help unless they set one."""
    parser.formatter_class = HelpFormatter
    parser.description = parser.description or description
    if examples and not parser.epilog:
        parser.epilog = examples
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                _document(sub, helps.get(name) or description, parser.epilog)


def _load(command: str):
    module_name, _ = COMMANDS[command]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (e.name == module_name or module_name.startswith(e.name + ".")):
            return None
        raise


# ffr's own console lines start with "[<run name>] " ("[sweep] ", "[demo] "). Ray deduplicates lines from its
# workers that differ only in words holding digits, which every run name and metric does: it held back trial
# epoch lines (some were never printed). Never deduplicate ours; read by Ray when it is imported, so set here.
NEVER_DEDUPLICATE = r"^\[[A-Za-z][^\]]*\] |__ray_testing_never_deduplicate__"


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("RAY_DEDUP_LOGS_ALLOW_REGEX", NEVER_DEDUPLICATE)
    parser = argparse.ArgumentParser(
        prog="ffr", description="Balanced synthetic data from diffusion models, and FFR two-stage training, on Ray.",
        epilog="'ffr COMMAND --help' describes a command, with examples. Start with: ffr demo (README.md).")
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
            _document(p, help_text, getattr(module, "EXAMPLES", None))
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
