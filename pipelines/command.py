"""``ffr generate --config FILE [key=value ...]``: build the manifest and generate (or resume) a run.

Examples::

    ffr generate --config configs/generate-colored-digits.yaml output=/tmp/digits budget.per_group=200
    ffr generate --config configs/generate-d3s-background.yaml output=s3://bucket/d3s ray.max_actors=8
    ffr generate --config configs/generate-ffr-celeba.yaml --manifest-only   # print group counts, no images
"""

from __future__ import annotations

import argparse
import json

from ffr.config import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.splitlines()[0]
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "\n".join(__doc__.splitlines()[2:])
    parser.add_argument("--config", required=True, help="YAML config (see configs/generate-*.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. seed=3")
    parser.add_argument("--manifest-only", action="store_true",
                        help="build the manifest and print images per group; generate nothing")


def run(args: argparse.Namespace) -> int:
    from pipelines.api import generate, plan

    data = load_config(args.config, args.overrides)
    if args.manifest_only:
        manifest = plan(data)
        counts = manifest.groupby("group_name", sort=False).size()
        for name, n in counts.items():
            print(f"{name}\t{n}")
        print(f"total\t{len(manifest)}\tshards\t{int(manifest['shard'].max()) + 1}")
        return 0
    summary = generate(data)
    print(json.dumps({k: v for k, v in summary.items() if k != "contact_sheets"}, indent=2))
    return 0 if summary["complete"] else 1
