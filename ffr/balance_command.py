"""``ffr balance``: print FFR's downsampling and synthetic budget tables for given group counts."""

from __future__ import annotations

import argparse

from ffr.balance import SYNTHETIC_MODES, VAL_FLOOR, keep_counts, synthetic_counts
from ffr.errors import FFRError


def parse_counts(text: str) -> dict[tuple[int, int], int]:
    """'0,0=592 0,1=5335' → {(0, 0): 592, (0, 1): 5335}."""
    counts = {}
    for item in text.replace(";", " ").split():
        try:
            key, n = item.split("=")
            y, b = key.split(",")
            counts[(int(y), int(b))] = int(n)
        except ValueError:
            raise FFRError(f"group count {item!r} is not of the form class,bias=count (e.g. 0,1=5335)") from None
    return counts


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--counts", required=True, help="full per-group counts, e.g. '0,0=5335 0,1=5335 1,0=7797 1,1=7797'")
    p.add_argument("--bias-ratio", type=float, required=True, help="bias ratio r in (0.5, 1)")
    p.add_argument("--split", choices=["train", "val"], default="train", help="val keeps at least 10 per group")


def run(args: argparse.Namespace) -> int:
    full = parse_counts(args.counts)
    kept = keep_counts(full, args.bias_ratio, VAL_FLOOR if args.split == "val" else 0)
    budgets = {mode: synthetic_counts(kept, mode) for mode in SYNTHETIC_MODES}
    print(f"{'group':>8} {'full':>8} {'kept':>8} " + " ".join(f"{m:>8}" for m in SYNTHETIC_MODES))
    for g in sorted(full):
        print(f"{str(g):>8} {full[g]:>8} {kept[g]:>8} " + " ".join(f"{budgets[m][g]:>8}" for m in SYNTHETIC_MODES))
    print(f"{'total':>8} {sum(full.values()):>8} {sum(kept.values()):>8} "
          + " ".join(f"{sum(budgets[m].values()):>8}" for m in SYNTHETIC_MODES))
    return 0
