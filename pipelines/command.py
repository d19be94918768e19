"""``ffr generate --config FILE [key=value ...]``: generate until every group has its budget of accepted images.

The budget counts ACCEPTED images per group: images the filters reject are replaced by extra, deterministic
ids (at most budget.max_factor × the target per group). Rerun the same command to resume; rerun with a larger
budget to extend the output (new ids only; finished shards are not touched). Other changes on an existing
output are refused, naming the keys that differ. budget.real_counts are the real TRAINING set's group counts
AFTER bias-ratio downsampling, as 'ffr balance --budget-block' prints them.

Examples::

    ffr generate --config configs/generate-colored-digits.yaml output=/tmp/digits budget.per_group=200
    ffr generate --config configs/generate-d3s-background.yaml output=s3://bucket/d3s ray.max_actors=8
    ffr generate --config configs/generate-ffr-celeba.yaml --manifest-only   # print group counts, no images
    ffr generate --config configs/generate-colored-digits.yaml --show-config  # every key: default, value
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ffr.config import add_config_arguments, format_config, load_config
from ffr.cost import add_dry_run_arguments
from ffr.errors import FFRError

LISTED = 8  # groups / contact sheets listed one per line; more are summarized


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.splitlines()[0].replace("``", "")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "\n".join(__doc__.splitlines()[2:])
    add_config_arguments(parser, "YAML config (see configs/generate-*.yaml)", "config overrides, e.g. seed=3")
    parser.add_argument("--manifest-only", action="store_true",
                        help="build the manifest and print images per group; generate nothing")
    parser.add_argument("--verbose", action="store_true",
                        help="show Ray Data's execution plan, banners and operator progress bars")
    parser.add_argument("--json", action="store_true", help="print the whole summary as JSON at the end")
    add_dry_run_arguments(parser, "images per group")


def format_summary(summary: dict[str, Any]) -> str:
    """What a person needs after a run: what happened, the cumulative accepted count, where to look."""
    rejected = sum(summary["rejects_by_reason"].values())
    reasons = ", ".join(f"{n} {r}" for r, n in sorted(summary["rejects_by_reason"].items()))
    lines = [f"this run: {summary['images_generated_this_run']} images in {summary['shards_run']} shards "
             f"({summary['seconds']:.1f} s, {summary['images_per_s']:.1f} img/s); "
             f"{summary['shards_skipped']} shards were already complete"]
    status = "every group has its target" if summary["complete"] else \
        f"{len(summary['short_per_group'])} group(s) short of the target — INCOMPLETE"
    lines.append(f"accepted: {summary['accepted']} images in total over {summary['rounds']} round(s), "
                 f"{rejected} rejected{f' ({reasons})' if reasons else ''}; {status}")
    groups = summary["accepted_per_group"]
    targets = summary.get("target_per_group", {})
    if len(groups) <= LISTED:
        width = max(len(name) for name in groups)
        lines += [f"  {name:<{width}}  {n} / {targets.get(name, 0)}" for name, n in groups.items()]
    else:
        lines.append(f"  {len(groups)} groups: {min(groups.values())} to {max(groups.values())} accepted each")
    if summary.get("storage_retries"):
        lines.append(f"storage: {summary['storage_retries']} request(s) retried after transient errors, all recovered")
    lines.append(f"output: {summary['output']}")
    sheets = summary.get("contact_sheets", [])
    if sheets:
        lines.append(f"contact sheets ({len(sheets)}):")
        lines += [f"  {path}" for path in sheets[:LISTED]]
        if len(sheets) > LISTED:
            lines.append(f"  ... and {len(sheets) - LISTED} more in {sheets[0].rsplit('/', 1)[0]}")
    return "\n".join(lines)


def option_rows(cfg: Any) -> dict[str, list[tuple]]:
    """``--show-config`` rows of the chosen recipe's ``recipe.options`` and backend's ``backend.settings``: every
    option of their Options models with its default (given keys they do not know are listed too, default null)."""
    import dataclasses

    from ffr.options import rows
    from pipelines.backends import BACKENDS
    from pipelines.recipes import RECIPES

    if cfg.recipe.name not in RECIPES:
        return {}
    recipe = RECIPES.get(cfg.recipe.name)
    backend = cfg.backend.name or recipe.default_backend
    out: dict[str, list[tuple]] = {}
    for key, entry, given in (("recipe.options", recipe, cfg.recipe.options),
                              ("backend.settings", BACKENDS.get(backend) if backend in BACKENDS else None,
                               cfg.backend.settings)):
        if entry is None or not isinstance(given, dict):
            continue
        def shown(value: Any) -> Any:  # ffr.options.rows marks required options "(required)"; the table, MISSING
            return dataclasses.MISSING if isinstance(value, str) and value == "(required)" else value

        out[key] = [(k, shown(d), shown(v)) for k, d, v, _ in rows(entry.Options, given, key + ".")]
        out[key] += [(f"{key}.{k}", None, v) for k, v in given.items() if k not in entry.Options.model_fields]
    return out


def run(args: argparse.Namespace) -> int:
    from pipelines.api import generate, plan
    from pipelines.config import GenerateConfig, normalize

    data = load_config(args.config, args.overrides)
    if args.show_config:
        from ffr.config import build

        cfg = build(GenerateConfig, normalize(data))
        print(format_config(GenerateConfig, cfg, expand=option_rows(cfg)))
        return 0
    if args.config is None:
        raise FFRError("ffr generate needs --config FILE (see configs/generate-*.yaml)")
    if args.dry_run:
        from ffr.cost import Throughput
        from pipelines.cost import estimate_generation

        print(estimate_generation(data, args.gpu, Throughput.load(args.throughput)).render())
        return 0
    if args.manifest_only:
        manifest = plan(data)
        counts = manifest.groupby("group_name", sort=False).size()
        for name, n in counts.items():
            print(f"{name}\t{n}")
        print(f"total\t{len(manifest)}\tshards\t{int(manifest['shard'].max()) + 1}")
        return 0
    if args.verbose:
        data["verbose"] = True
    summary = generate(data)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0 if summary["complete"] else 1
