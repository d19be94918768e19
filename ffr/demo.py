"""``ffr demo``: the embedded offline benchmark, end to end, over one or more seeds (no downloads, CPU is enough).

1. Real side: scikit-learn's handwritten digits on red/green backgrounds, biased by FFR's bias-ratio rule;
   a seed picks the split, the colors, the synthetic selection and the training randomness.
2. Synthetic side: the ``colored-digits`` recipe (font digits rendered the way the real ones were made)
   through the Ray Data job, per seed as many images per group as that seed's USB/ASB/FFR budgets need.
3. Training: the grid — every variant (none / usb / asb / ffr) × method (ERM, GroupDRO) × seed — as the
   trials of one Ray Tune run (``tune.grid``), two at a time on two cores, each trial training in its own
   process (``executor: local``: no Ray Train start-up per run). FFR's stage 1 (30 epochs on the balanced
   synthetic set) is trained once per seed and shared by both methods; its own test WGA is the
   "FFR, stage 1 only" row.
4. The paper-style table (test WGA mean ± std over seeds, n), paired per-seed comparisons, and
   ``ffr report``'s per-run tables and plots under ``--out/report``.

Rerunning the same command resumes: finished runs are not trained again.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np

from ffr.balance import SYNTHETIC_MODES, synthetic_counts
from ffr.errors import FFRError
from ffr.groups import group_counts

DEFAULT_VARIANTS = ("none", "usb", "asb", "ffr")
DEFAULT_METHODS = ("erm", "groupdro")
STAGE1_ONLY = "ffr, stage 1 only"
LABELS = {"none": "none", "usb": "USB", "asb": "ASB", "ffr": "FFR", STAGE1_ONLY: "FFR, stage 1 only",
          "erm": "ERM", "groupdro": "GroupDRO"}


def synthetic_budget(real_train_counts: dict[tuple[int, int], int]) -> dict[str, int]:
    """Per group, the most images any variant draws: max over USB, ASB and FFR budgets (as {"y,b": n})."""
    budgets = [synthetic_counts(real_train_counts, mode) for mode in SYNTHETIC_MODES]
    return {f"{y},{b}": max(bud[(y, b)] for bud in budgets) for (y, b) in real_train_counts}


def train_config(variant: str, method: str, seed: int, synthetic_root: str | None, runs_root: str,
                 bias_ratio: float = 0.95, epochs: int = 8, stage1_epochs: int = 30) -> dict:
    """One run of the demo grid. Stage 1 trains 30 epochs: at 8, the small CNN does not even learn the
    balanced synthetic task, so stage 1 alone transfers nothing and FFR's premise is not tested."""
    return {"dataset": "colored-digits", "dataset_options": {"bias_ratio": bias_ratio, "seed": seed},
            "variant": variant, "synthetic_root": synthetic_root if variant != "none" else None,
            "method": method, "seed": seed, "backbone": "small-cnn", "pretrained": None, "image_size": 32,
            "optimizer": "adam", "lr": 1e-3, "weight_decay": 1e-5, "epochs": epochs, "batch_size": 128,
            "stage1": {"epochs": stage1_epochs, "lr": 1e-3}, "storage_path": runs_root, "executor": "local",
            "cache_in_memory": True}


def grid_chains(configs: dict[tuple[int, str, str], dict]) -> list[list[dict]]:
    """One chain per (seed, variant): its methods in order, so FFR's shared stage 1 is trained by one trial.
    FFR chains (stage 1 + two stage-2 runs, the longest) go first, so no long trial starts last."""
    chains: dict[tuple[int, str], list[dict]] = {}
    for (seed, variant, _method), config in configs.items():
        chains.setdefault((seed, variant), []).append(config)
    order = sorted(chains, key=lambda sv: (sv[1] != "ffr", sv[0], sv[1]))
    return [chains[k] for k in order]


def _test_wga(config: dict, stage1: bool = False) -> float | None:
    from ffr import runs
    from ffr.training.config import method_stage, parse, pretrain_stage

    cfg = parse(config)
    spec = pretrain_stage(cfg) if stage1 else method_stage(cfg)
    result = runs.read_result(runs.run_dir(cfg.storage_path, spec.run_name))
    return None if result is None else float(result["test"]["worst_group_acc"])


def collect_wga(configs: dict[tuple[int, str, str], dict]) -> dict[tuple[str, str], dict[int, float]]:
    """{(variant, method): {seed: test WGA}}, plus (STAGE1_ONLY, "erm") from FFR's stage-1 runs."""
    out: dict[tuple[str, str], dict[int, float]] = {}
    for (seed, variant, method), config in configs.items():
        for row, stage1 in ((variant, False), (STAGE1_ONLY, True)):
            if stage1 and (variant != "ffr" or (row, "erm") in out and seed in out[(row, "erm")]):
                continue
            wga = _test_wga(config, stage1)
            if wga is not None:
                out.setdefault((row, "erm" if stage1 else method), {})[seed] = wga
    return out


def _cell(values: list[float]) -> str:
    """One cell as ``ffr report`` writes it: mean ± sample std over seeds (n), no spread for one seed."""
    from ffr.report import mean_std_cell

    if not values:
        return "–"
    a = np.asarray(values, dtype=float)
    return mean_std_cell(a.mean(), a.std(ddof=1) if len(a) > 1 else None, len(a))


def grid_table(wga: dict[tuple[str, str], dict[int, float]], variants: tuple[str, ...],
               methods: tuple[str, ...]) -> str:
    """Markdown: rows variant (none, USB, ASB, FFR, FFR stage 1 only), columns method; test WGA in %,
    mean ± sample std over seeds, and n."""
    rows = [v for v in variants] + ([STAGE1_ONLY] if "ffr" in variants else [])
    lines = ["| test WGA % | " + " | ".join(LABELS.get(m, m) for m in methods) + " |",
             "|---|" + "---|" * len(methods)]
    for row in rows:
        cells = [_cell(list(wga.get((row, m), {}).values())) if row != STAGE1_ONLY or m == "erm" else ""
                 for m in methods]
        lines.append(f"| {LABELS.get(row, row)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_comparisons(wga: dict[tuple[str, str], dict[int, float]]) -> list[dict]:
    """Every pair of rows that share a method (and every pair of methods that share a variant), compared
    seed by seed: mean and std of the per-seed differences, how many seeds agree in sign, and a paired
    t-test. A difference "exceeds the seed spread" when p < 0.05 (n ≥ 3)."""
    from scipy import stats

    cells = sorted(wga)
    out = []
    for i, a in enumerate(cells):
        for b in cells[i + 1:]:
            if a[0] != b[0] and a[1] != b[1]:
                continue
            seeds = sorted(set(wga[a]) & set(wga[b]))
            if len(seeds) < 2:
                continue
            d = 100 * np.asarray([wga[a][s] - wga[b][s] for s in seeds])
            higher, lower = (a, b) if d.mean() >= 0 else (b, a)  # stated as "higher minus lower"
            d = d if d.mean() >= 0 else -d
            sd = float(d.std(ddof=1))
            p = float(stats.ttest_rel(d, np.zeros_like(d)).pvalue) if sd > 0 else (0.0 if d.mean() else 1.0)
            out.append({"higher": higher, "lower": lower, "n": len(seeds), "mean_diff": float(d.mean()), "std_diff": sd,
                        "wins": int((d > 0).sum()), "p": p, "exceeds": len(seeds) >= 3 and p < 0.05})
    return sorted(out, key=lambda c: c["p"])


def _name(cell: tuple[str, str]) -> str:
    variant, method = cell
    return LABELS[variant] if variant == STAGE1_ONLY else f"{LABELS.get(variant, variant)}+{LABELS.get(method, method)}"


def comparison_text(comparisons: list[dict]) -> str:
    lines = [f"- {_name(c['higher'])} > {_name(c['lower'])} by {c['mean_diff']:.1f} ± {c['std_diff']:.1f} points "
             f"(higher in {c['wins']}/{c['n']} seeds, paired t-test p = {c['p']:.3f})"
             + (" — exceeds the seed spread" if c["exceeds"] else "") for c in comparisons]
    big = [c for c in comparisons if c["exceeds"]]
    summary = ("Differences larger than the seed spread (paired over seeds, p < 0.05): "
               + ("; ".join(f"{_name(c['higher'])} > {_name(c['lower'])}" for c in big) if big else "none")
               + ". Every other difference is within the seed-to-seed spread.")
    return summary + "\n\n" + "\n".join(lines)


def run_demo(out: str, bias_ratio: float = 0.95, seeds: tuple[int, ...] = (0,), epochs: int = 8,
             stage1_epochs: int = 30, variants: tuple[str, ...] = DEFAULT_VARIANTS,
             methods: tuple[str, ...] = DEFAULT_METHODS, max_concurrent: int = 2) -> str:
    """Run the whole demo; returns the path of the written grid table (``report/grid.md``)."""
    import pipelines
    from ffr import datasets
    from ffr.ray_session import ensure_ray
    from ffr.report import collect, render_text, runs_table, write_report
    from ffr.runs.protocol import DEFAULT_SELECTION, select
    from ffr.storage import ensure_dir, filesystem, join
    from tune.grid import run_grid

    if not seeds:
        raise FFRError("ffr demo needs at least one seed, e.g. --seeds 0,1,2")
    started = time.perf_counter()
    out = out if "://" in out else os.path.abspath(out)
    runs_root = join(out, "runs")
    ensure_ray()
    configs: dict[tuple[int, str, str], dict] = {}
    for seed in seeds:
        real = datasets.create("colored-digits", bias_ratio=bias_ratio, seed=seed)
        counts = group_counts(real["train"].y, real["train"].b)
        print(f"[demo] seed {seed}: real train groups (class, bias) → count: {counts}", flush=True)
        synthetic_root = join(out, "synthetic", f"seed-{seed}")
        if any(v != "none" for v in variants):
            budget = synthetic_budget(counts)
            summary = pipelines.generate({"recipe": {"name": "colored-digits"}, "output": synthetic_root,
                                          "seed": seed, "budget": {"per_group": budget}, "shard_size": 500,
                                          "batch_size": 64})
            print(f"[demo] seed {seed}: {summary['accepted']} synthetic images per group {budget}", flush=True)
        for variant in variants:
            for method in methods:
                configs[(seed, variant, method)] = train_config(variant, method, seed, synthetic_root, runs_root,
                                                                bias_ratio, epochs, stage1_epochs)
    generated = time.perf_counter()
    print(f"[demo] training {len(configs)} runs ({len(seeds)} seeds) as Tune trials, {max_concurrent} at a time",
          flush=True)
    run_grid(grid_chains(configs), "demo-grid", join(out, "grid"), max_concurrent=max_concurrent)
    trained = time.perf_counter()

    records = collect([runs_root])
    print(render_text(runs_table(records), select(records, DEFAULT_SELECTION), DEFAULT_SELECTION), flush=True)
    write_report(records, [runs_root], join(out, "report"))
    wga = collect_wga(configs)
    table = grid_table(wga, variants, methods)
    n_runs = len(configs) + (len(seeds) if "ffr" in variants else 0)
    timing = (f"{len(seeds)} seed(s), {n_runs} training runs; wall time {trained - started:.0f} s "
              f"(generation {generated - started:.0f} s, training {trained - generated:.0f} s) "
              f"on {os.cpu_count()} CPUs, load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    text = (f"# ffr demo: colored digits, bias ratio {bias_ratio}\n\n{table}\n\n{timing}\n\n"
            f"{comparison_text(paired_comparisons(wga))}\n")
    print("\n" + text, flush=True)
    fs, inner = filesystem(join(out, "report"))
    ensure_dir(fs, inner)
    path = join(out, "report", "grid.md")
    with fs.open(filesystem(path)[1], "w") as f:
        f.write(text)
    from ffr import tracking
    from ffr.training.config import parse

    print(tracking.ui_line(tracking.tracking_uri(parse(next(iter(configs.values()))).mlflow, runs_root)), flush=True)
    print(f"[demo] done in {time.perf_counter() - started:.0f} s; table: {path}", flush=True)
    return path


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise FFRError(f"--seeds {text!r} is not a comma-separated list of integers, e.g. 0,1,2") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo_out", help="output folder (local path or s3://)")
    p.add_argument("--bias-ratio", type=float, default=0.95)
    p.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2,3,4 (the paper-style table)")
    p.add_argument("--epochs", type=int, default=8, help="stage-2 (and single-stage) epochs")
    p.add_argument("--stage1-epochs", type=int, default=30, help="FFR stage-1 epochs on synthetic data")
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    p.add_argument("--max-concurrent", type=int, default=max(1, math.floor(os.cpu_count() or 1)),
                   help="grid trials trained side by side (one CPU each)")


def run(args: argparse.Namespace) -> int:
    run_demo(args.out, args.bias_ratio, _ints(args.seeds), args.epochs, args.stage1_epochs,
             tuple(v for v in args.variants.split(",") if v), tuple(m for m in args.methods.split(",") if m),
             args.max_concurrent)
    return 0
