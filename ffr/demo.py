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


HOLDOUT = 150  # synthetic images per group beyond the variants' budgets: the (B, G) diagnostic's held-out set


def synthetic_budget(real_train_counts: dict[tuple[int, int], int], holdout: int = 0) -> dict[str, int]:
    """Per group, the most images any variant draws — max over USB, ASB and FFR budgets — plus ``holdout``
    more for the (B, G) diagnostic (as {"y,b": n}). The variants select independently from the same images,
    so some of the extra ones are used by one of them: the diagnostic's held-out set is what none uses."""
    budgets = [synthetic_counts(real_train_counts, mode) for mode in SYNTHETIC_MODES]
    return {f"{y},{b}": max(bud[(y, b)] for bud in budgets) + holdout for (y, b) in real_train_counts}


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
    ensure_dir(*filesystem(out))  # S3 credentials and the bucket, in one line, before Ray starts
    ensure_ray()
    configs: dict[tuple[int, str, str], dict] = {}
    for seed in seeds:
        real = datasets.create("colored-digits", bias_ratio=bias_ratio, seed=seed)
        counts = group_counts(real["train"].y, real["train"].b)
        print(f"[demo] seed {seed}: real train groups (class, bias) → count: {counts}", flush=True)
        synthetic_root = join(out, "synthetic", f"seed-{seed}")
        if any(v != "none" for v in variants):
            budget = synthetic_budget(counts, HOLDOUT)
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


# --- the gap study: FFR's (B, G) argument with the synthetic side's visibility as a dial -----------------------

GAP_STRENGTHS = (0.0, 8.0, 24.0)


def gap_study_config(out: str, strengths: tuple[float, ...], seeds: tuple[int, ...], bias_ratio: float = 0.95,
                     epochs: int = 8, stage1_epochs: int = 30, max_concurrent: int = 2,
                     variants: tuple[str, ...] = DEFAULT_VARIANTS, methods: tuple[str, ...] = DEFAULT_METHODS) -> dict:
    """The study behind :func:`run_gap_study`: one entry of ``datasets`` per signature strength (its own
    synthetic sets, one per seed), every variant × ERM/GroupDRO × seed, the demo's training settings."""
    from ffr.storage import join

    base = train_config("ffr", "erm", 0, None, join(out, "runs"), bias_ratio, epochs, stage1_epochs)
    for key in ("variant", "method", "seed", "synthetic_root", "storage_path"):
        base.pop(key)
    return {"name": "gap-study", "storage_path": join(out, "runs"), "train": base,
            "datasets": [{"label": _strength_label(s), "synthetic_root": join(out, "synthetic", f"sig-{s:g}",
                                                                               "seed-{seed}")}
                         for s in strengths],
            "variants": list(variants), "methods": list(methods), "seeds": list(seeds),
            "max_concurrent_trials": max_concurrent, "select": "val-wga"}


def _strength_label(strength: float) -> str:
    return f"signature {strength:g}"


def gap_tables(by_entry: dict[str, list], strengths: tuple[float, ...]) -> tuple[str, dict]:
    """Markdown tables (test WGA and the diagnostic, by variant × method, one column per strength) and the
    numbers behind them: {(variant, method, strength): {"wga": Stat, "probe": Stat, "synthetic_wga": Stat}}."""
    from ffr.runs import DIAGNOSTIC, number
    from ffr.runs.protocol import Stat, select

    numbers: dict[tuple[str, str, float], dict] = {}
    for strength in strengths:
        for cell in select(by_entry.get(_strength_label(strength), []), "val-wga"):
            row = STAGE1_ONLY if cell.stage1_only else cell.variant
            diags = [r.result.get(DIAGNOSTIC) or {} for r in cell.records]
            numbers[(row, cell.method.split(" ")[0], strength)] = {
                "wga": cell.test["worst_group_acc"],
                "probe": Stat.of([number((d.get("probe") or {}).get("accuracy")) for d in diags]),
                "synthetic_wga": Stat.of([number((d.get("synthetic") or {}).get("worst_group_acc")) for d in diags]),
                "seeds": {int(r.get("seed")): number(((r.result or {}).get("test") or {}).get("worst_group_acc"))
                          for r in cell.records}}
    rows = [(v, m) for v in DEFAULT_VARIANTS for m in DEFAULT_METHODS] + [(STAGE1_ONLY, "erm")]
    columns = " | ".join(f"signature {s:g}" for s in strengths)

    def table(title: str, key: str, skip_none: bool = False) -> str:
        lines = [f"| {title} | {columns} |", "|---|" + "---|" * len(strengths)]
        for variant, method in rows:
            if skip_none and variant == "none":
                continue
            cells = []
            for s in strengths:
                stat = numbers.get((variant, method, s), {}).get(key)
                cells.append("–" if stat is None or stat.mean is None else
                             f"{100 * stat.mean:.1f}" + (f" ± {100 * stat.std:.1f}" if stat.std is not None else "")
                             + f" (n={stat.n})")
            label = LABELS[variant] if variant == STAGE1_ONLY else f"{LABELS[variant]}+{LABELS[method]}"
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    text = "\n\n".join([table("test WGA %", "wga"), table("real-vs-synthetic probe acc %", "probe", True),
                         table("held-out synthetic WGA %", "synthetic_wga", True)])
    return text, numbers


def plot_gap(numbers: dict, strengths: tuple[float, ...]) -> bytes:
    """Test WGA against signature strength, one line per variant (solid ERM, dashed GroupDRO), error bars = std
    over seeds; beside it the (B, G) diagnostic: the real-vs-synthetic probe's accuracy and the model's
    worst-group accuracy on held-out synthetic images."""
    from ffr.runs.plots import figure_png, pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    colors = {"none": "gray", "usb": "tab:orange", "asb": "tab:green", "ffr": "tab:blue", STAGE1_ONLY: "tab:purple"}
    panels = (("wga", "test worst-group accuracy (%)", (0, 100), "test WGA (val-WGA-selected), mean ± std"),
              ("probe", "probe accuracy (%)", (40, 102), "(B, G): real-vs-synthetic linear probe"),
              ("synthetic_wga", "held-out synthetic WGA (%)", (0, 100), "(B, G): WGA on held-out synthetic images"))
    for variant in (*DEFAULT_VARIANTS, STAGE1_ONLY):
        for method, style in (("erm", "-"), ("groupdro", "--")):
            points = [(s, numbers.get((variant, method, s))) for s in strengths]
            points = [(s, p) for s, p in points if p is not None]
            label = LABELS[variant] if variant == STAGE1_ONLY else f"{LABELS[variant]}+{LABELS[method]}"
            for ax, (key, *_rest) in zip(axes, panels):
                shown = [(s, p[key]) for s, p in points if p[key].mean is not None]
                if shown:
                    ax.errorbar([s for s, _ in shown], [100 * st.mean for _, st in shown],
                                yerr=[100 * (st.std or 0) for _, st in shown], linestyle=style, marker="o",
                                capsize=3, color=colors[variant], label=label)
    for ax, (_key, ylabel, ylim, title) in zip(axes, panels):
        ax.set(xlabel="generator signature strength (gray levels, RMS)", ylabel=ylabel, ylim=ylim, title=title)
        ax.set_xticks(list(strengths))
        ax.grid(alpha=0.3)
    axes[1].axhline(50, color="black", linewidth=0.5)
    axes[-1].legend(*axes[0].get_legend_handles_labels(), fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return figure_png(fig)


def run_gap_study(out: str, strengths: tuple[float, ...] = GAP_STRENGTHS, seeds: tuple[int, ...] = (0, 1, 2),
                  bias_ratio: float = 0.95, epochs: int = 8, stage1_epochs: int = 30, max_concurrent: int = 2,
                  variants: tuple[str, ...] = DEFAULT_VARIANTS, methods: tuple[str, ...] = DEFAULT_METHODS) -> str:
    """FFR's argument as an experiment on the embedded benchmark: at each generator-signature strength (how
    visible "synthetic" is, ``pipelines.backends.procedural``), every variant × ERM/GroupDRO × seed, as one
    ``ffr study``; then test WGA against strength, with the (B, G) diagnostic beside it. Returns the path of
    ``report/gap.md`` (the plot is ``report/gap.png``). Rerunning resumes."""
    import pipelines
    from ffr import datasets
    from ffr.report import protocol_text
    from ffr.runs.protocol import select
    from ffr.storage import ensure_dir, filesystem, join
    from tune.study import count_line, parse_study, plan_study, records_by_entry, run_study

    if not seeds or not strengths:
        raise FFRError("the gap study needs at least one seed and one signature strength")
    started = time.perf_counter()
    out = out if "://" in out else os.path.abspath(out)
    for seed in seeds:
        real = datasets.create("colored-digits", bias_ratio=bias_ratio, seed=seed)
        budget = synthetic_budget(group_counts(real["train"].y, real["train"].b), HOLDOUT)
        for strength in strengths:
            backend = {"name": "procedural", "settings": {"signature": strength}} if strength else {}
            pipelines.generate({"recipe": {"name": "colored-digits"}, "backend": backend, "seed": seed,
                                "output": join(out, "synthetic", f"sig-{strength:g}", f"seed-{seed}"),
                                "budget": {"per_group": budget}, "shard_size": 500, "batch_size": 64,
                                "runner": "local", "progress": False})  # procedural: seconds, no Ray Data needed
    generated = time.perf_counter()
    cfg = parse_study(gap_study_config(out, strengths, seeds, bias_ratio, epochs, stage1_epochs, max_concurrent,
                                       variants, methods))
    plan = plan_study(cfg)
    print(f"[gap study] {count_line(plan)}", flush=True)
    table = run_study(cfg, plan)
    trained = time.perf_counter()
    failed = table[table["status"] != "finished"]
    if not failed.empty:
        raise FFRError(f"{len(failed)} of {len(table)} gap-study runs did not finish: "
                       f"{', '.join(failed['run_name'])}; rerun the same command to resume")
    by_entry = records_by_entry(plan)
    for label, records in by_entry.items():
        print("\n" + protocol_text(select(records, "val-wga"), "val-wga", title=label), flush=True)
    tables, numbers = gap_tables(by_entry, strengths)
    comparisons = []
    for strength in strengths:
        wga = {(v, m): p["seeds"] for (v, m, s), p in numbers.items() if s == strength}
        big = [c for c in paired_comparisons(wga) if c["exceeds"]]
        comparisons.append(f"- signature {strength:g}: " + ("; ".join(
            f"{_name(c['higher'])} > {_name(c['lower'])} by {c['mean_diff']:.1f} ± {c['std_diff']:.1f} "
            f"(p = {c['p']:.3f})" for c in big) if big else "no difference exceeds the seed spread"))
    timing = (f"{len(seeds)} seeds × {len(strengths)} signature strengths, {len(plan.jobs)} training runs "
              f"({len(plan.to_train)} trained by this call); wall time "
              f"{trained - started:.0f} s (generation {generated - started:.0f} s, training {trained - generated:.0f} "
              f"s) on {os.cpu_count()} CPUs, load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    shown = ", ".join(f"{s:g}" for s in strengths)
    text = (f"# Gap study: colored digits, bias ratio {bias_ratio}, generator signature strengths {shown}"
            f"\n\nTest WGA: the val-WGA-selected setting (one per cell here), mean ± std over seeds. The diagnostic "
            f"(B, G): a linear probe on the model's frozen features telling real from held-out synthetic images "
            f"(balanced, chance 50 %), and the model's worst-group accuracy on held-out synthetic images.\n\n"
            f"{tables}\n\n![gap](gap.png)\n\n{timing}\n\nPaired over seeds (p < 0.05, n ≥ 3), per strength:\n"
            + "\n".join(comparisons) + "\n")
    report = join(out, "report")
    fs, inner = filesystem(report)
    ensure_dir(fs, inner)
    with fs.open(filesystem(join(report, "gap.png"))[1], "wb") as f:
        f.write(plot_gap(numbers, strengths))
    path = join(report, "gap.md")
    with fs.open(filesystem(path)[1], "w") as f:
        f.write(text)
    print("\n" + text, flush=True)
    print(f"[gap study] done in {time.perf_counter() - started:.0f} s; table: {path}, plot: {join(report, 'gap.png')}",
          flush=True)
    return path


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise FFRError(f"--gap-study {text!r} is not a comma-separated list of numbers, e.g. 0,8,24") from None


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise FFRError(f"--seeds {text!r} is not a comma-separated list of integers, e.g. 0,1,2") from None


EXAMPLES = """\
Generates the synthetic side (procedural digits, Ray Data), trains variants none / USB / ASB / FFR × ERM /
GroupDRO as Ray Tune trials, and writes --out/report/ (grid.md, report.md, plots). Offline, CPU only; a rerun
resumes (finished runs are not trained again).

examples:
  ffr demo                                   # one seed, about 3 minutes on 2 cores → demo_out/
  ffr demo --seeds 0,1,2,3,4                 # the README's table (make demo-seeds), about 10 minutes
  ffr demo --variants none,ffr --methods erm --epochs 2 --stage1-epochs 4 --out /tmp/quick
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo_out", help="output folder (local path or s3://)")
    p.add_argument("--bias-ratio", type=float, default=0.95, help="share of each class's majority color kept")
    p.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2,3,4 (the paper-style table)")
    p.add_argument("--epochs", type=int, default=8, help="stage-2 (and single-stage) epochs")
    p.add_argument("--stage1-epochs", type=int, default=30, help="FFR stage-1 epochs on synthetic data")
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help="comma-separated data variants")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS), help="comma-separated stage-2 methods")
    p.add_argument("--max-concurrent", type=int, default=max(1, math.floor(os.cpu_count() or 1)),
                   help="grid trials trained side by side (one CPU each)")
    p.add_argument("--gap-study", default=None, metavar="STRENGTHS",
                   help="instead: the gap study at these generator-signature strengths, e.g. 0,8,24 (every variant "
                        "× ERM/GroupDRO × --seeds as one ffr study; test WGA against strength, with the (B, G) "
                        "diagnostic; `make gap-study`)")


def run(args: argparse.Namespace) -> int:
    if args.gap_study is not None:
        run_gap_study(args.out, _floats(args.gap_study), _ints(args.seeds), args.bias_ratio, args.epochs,
                      args.stage1_epochs, args.max_concurrent, tuple(v for v in args.variants.split(",") if v),
                      tuple(m for m in args.methods.split(",") if m))
        return 0
    run_demo(args.out, args.bias_ratio, _ints(args.seeds), args.epochs, args.stage1_epochs,
             tuple(v for v in args.variants.split(",") if v), tuple(m for m in args.methods.split(",") if m),
             args.max_concurrent)
    return 0
