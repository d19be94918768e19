"""``ffr balance``: FFR's downsampling and synthetic budget tables for given group counts.

--counts are the FULL real training counts per group (before downsampling). The table shows what training
keeps at --bias-ratio ("kept") and the synthetic images per group of each mode computed from the KEPT counts:
the real set the synthetic images are mixed with (usb, asb) or stand in for (ffr). A generate config's
budget.real_counts means the same kept counts; --budget-block prints that YAML block, ready to paste.

examples:
    ffr balance --counts '0,0=914 0,1=5335 1,0=7797 1,1=943' --bias-ratio 0.95
    ffr balance --counts '0,0=914 0,1=5335 1,0=7797 1,1=943' --bias-ratio 0.99 --budget-block --mode all
"""

from __future__ import annotations

import argparse

from ffr.balance import BUDGET_MODES, SYNTHETIC_MODES, VAL_FLOOR, budget_counts, keep_counts, synthetic_counts
from ffr.errors import FFRError
from ffr.options import group_key


def parse_counts(text: str) -> dict[tuple[int, int], int]:
    """'0,0=592 0,1=5335' → {(0, 0): 592, (0, 1): 5335}."""
    counts = {}
    for item in text.replace(";", " ").split():
        key, _, n = item.partition("=")
        try:
            count = int(n)
        except ValueError:
            raise FFRError(f"group count {item!r} is not of the form class,bias=count (e.g. 0,1=5335)") from None
        counts[group_key(key, f"group count {item!r}: key")] = count
    return counts


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = __doc__.splitlines()[0].replace("``", "")
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = "\n".join(__doc__.splitlines()[2:])
    p.add_argument("--counts", required=True,
                   help="FULL per-group train counts (before downsampling), e.g. '0,0=914 0,1=5335 1,0=7797 1,1=943'")
    p.add_argument("--bias-ratio", type=float, required=True, help="bias ratio r in (0.5, 1)")
    p.add_argument("--split", choices=["train", "val"], default="train", help="val keeps at least 10 per group")
    p.add_argument("--budget-block", action="store_true",
                   help="print the 'budget:' block of a generate config (real_counts = the kept counts) instead")
    p.add_argument("--mode", choices=BUDGET_MODES, default="all",
                   help="budget mode of --budget-block; 'all' (default) = enough for usb, asb and ffr")


def budget_block(full: dict[tuple[int, int], int], kept: dict[tuple[int, int], int], bias_ratio: float,
                 mode: str) -> str:
    """The YAML ``budget:`` block for a generate config, with the counts' provenance in comments."""
    wanted = budget_counts(kept, mode)
    full_text = " ".join(f"{y},{b}={n}" for (y, b), n in sorted(full.items()))
    real = ", ".join(f'"{y},{b}": {n}' for (y, b), n in sorted(kept.items()))
    per_group = ", ".join(f"{y},{b}: {n}" for (y, b), n in sorted(wanted.items()))
    return "\n".join([
        "budget:",
        "  # the real training set's group counts AFTER bias-ratio downsampling (what training sees), from",
        f"  #   ffr balance --counts '{full_text}' --bias-ratio {bias_ratio:g}",
        f"  real_counts: {{{real}}}",
        f"  mode: {mode}",
        f"  # → accepted images per group: {per_group} (total {sum(wanted.values())})",
    ])


def run(args: argparse.Namespace) -> int:
    full = parse_counts(args.counts)
    kept = keep_counts(full, args.bias_ratio, VAL_FLOOR if args.split == "val" else 0)
    if args.budget_block:
        if args.split != "train":
            raise FFRError("--budget-block uses the train split (synthetic images train only); drop --split val")
        print(budget_block(full, kept, args.bias_ratio, args.mode))
        return 0
    budgets = {mode: synthetic_counts(kept, mode) for mode in SYNTHETIC_MODES}
    print(f"{'group':>8} {'full':>8} {'kept':>8} " + " ".join(f"{m:>8}" for m in SYNTHETIC_MODES))
    for g in sorted(full):
        print(f"{str(g):>8} {full[g]:>8} {kept[g]:>8} " + " ".join(f"{budgets[m][g]:>8}" for m in SYNTHETIC_MODES))
    print(f"{'total':>8} {sum(full.values()):>8} {sum(kept.values()):>8} "
          + " ".join(f"{sum(budgets[m].values()):>8}" for m in SYNTHETIC_MODES))
    return 0
