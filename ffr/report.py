"""``ffr report RUNS_ROOT... [--out DIR]``: paper tables, per-run tables and plots from run directories.

A run directory is any folder holding ``ffr_result.json`` (finished; ``result.json`` beside a config.json
for runs written before the rename), or only ``metrics.jsonl`` (unfinished: still training, killed, or
``stopped.json``: stopped early by a sweep's ASHA). ``ffr.runs`` finds and reads them (this module makes
tables, plots and files from what it reads). Roots are searched recursively, locally or on ``s3://``, so a
run, a sweep folder (Tune's own files in it are skipped) or a whole storage path works.

Per dataset it prints the *paper table*: rows method × variant (none, USB, ASB, FFR, then "FFR, stage 1
only"), columns bias ratios, each cell test WGA mean ± sample std over seeds and n. Runs are grouped by
every setting except the seed (the config minus seeds, seed-dependent paths and execution fields), so runs
that differ in bias ratio or a hyperparameter are never averaged as seeds; a hyperparameter that differs
within a cell becomes part of the row label. Then one row per run (best epoch, val/test WGA, test
mean-group and overall accuracy, each test group's accuracy by name with its size), and every setting with
all its accuracies. With ``--out`` it also writes ``report.md``, ``report.csv`` (raw fractions) and PNG
plots: test WGA by variant × method with error bars over seeds, validation WGA per epoch, and test
accuracy per group.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from typing import Any

import numpy as np
import pandas as pd

from ffr.errors import FFRError
from ffr.runs import METRICS, RESULT, RunRecord, find_runs, number
from ffr.runs.plots import figure_png, plot_test_groups, plot_val_curves, pyplot
from ffr.storage import ensure_dir, filesystem

RUN_COLUMNS = ("run", "dataset", "variant", "method", "stage", "seed", "status", "best_epoch", "val_wga",
               "test_wga", "test_mean_group_acc", "test_overall_acc")
HEADERS = {"run": "run", "dataset": "dataset", "variant": "variant", "method": "method", "stage": "stage",
           "seed": "seed", "status": "status", "best_epoch": "best ep", "val_wga": "val WGA",
           "test_wga": "test WGA", "test_mean_group_acc": "test mean-grp", "test_overall_acc": "test overall"}
ACCURACY_COLUMNS = ("val_wga", "test_wga", "test_mean_group_acc", "test_overall_acc")


def run_row(record: RunRecord) -> dict[str, Any]:
    """One run's table row: :data:`RUN_COLUMNS`, ``path``, ``bias_ratio``, ``settings`` (what makes runs seeds
    of one setting) and ``test_acc[<group>]`` / ``test_n[<group>]``."""
    test = (record.result or {}).get("test") or {}
    best_epoch, val_wga = record.best()
    row = {"run": record.name, "dataset": record.get("dataset", "?"), "variant": record.get("variant", "?"),
           "method": record.method_label, "stage": record.get("stage"), "seed": record.get("seed"),
           "status": record.status, "best_epoch": best_epoch,
           "val_wga": val_wga, "test_wga": number(test.get("worst_group_acc")),
           "test_mean_group_acc": number(test.get("mean_group_acc")),
           "test_overall_acc": number(test.get("overall_acc")), "path": record.path}
    row["bias_ratio"] = number((record.config.get("dataset_options") or {}).get("bias_ratio"))
    row["settings"] = record.setting_key()
    row.update({f"test_acc[{name}]": acc for name, acc in record.test_group_accuracies().items()})
    row.update({f"test_n[{name}]": n for name, n in record.test_group_sizes().items()})
    return row


def collect(paths: list[str]) -> list[RunRecord]:
    """Runs under all ``paths``, sorted by dataset, variant, method, stage, seed; error if there are none."""
    records: dict[str, RunRecord] = {}
    for path in paths:
        for record in find_runs(str(path).rstrip("/") or "/"):
            records.setdefault(record.path, record)
    if not records:
        raise FFRError(f"no runs (folders with {RESULT} or {METRICS}) found under {', '.join(map(repr, paths))}")
    return sorted(records.values(), key=_sort_key)


def _sort_key(record: RunRecord) -> tuple:
    def text(v: Any) -> str:
        return "" if v is None else str(v)

    seed, stage = record.get("seed"), record.get("stage")
    return (text(record.get("dataset")), text(record.get("variant")), record.method_label,
            stage if isinstance(stage, int) else 0, seed if isinstance(seed, int) else -1, record.name)


# --- tables -----------------------------------------------------------------------------------------------


def runs_table(records: list[RunRecord]) -> pd.DataFrame:
    """One row per run with the columns of :data:`RUN_COLUMNS`, ``path`` and ``test_acc[<group>]``."""
    return pd.DataFrame([run_row(r) for r in records])


VARIANT_ORDER = ("none", "usb", "asb", "ffr")
VARIANT_LABELS = {"none": "none", "usb": "USB", "asb": "ASB", "ffr": "FFR"}
STAGE1_LABEL = "FFR, stage 1 only"
AXES = {"dataset", "variant", "method", "stage", "dataset_options.bias_ratio"}


def summary_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per setting (every config key but the seed; finished runs only): n seeds, and mean and sample
    std (ddof=1; none for n = 1) of the accuracy columns. Runs that differ in anything else — bias ratio,
    learning rate, a method hyperparameter — are different rows, never seeds of one."""
    done = table[table["status"] == "finished"] if "status" in table else table.iloc[0:0]
    columns = ["dataset", "variant", "method", "stage", "bias_ratio", "settings", "seeds"]
    if done.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for settings, group in done.groupby("settings", sort=False):
        first = group.iloc[0]
        row = {c: first[c] for c in columns[:-2]}
        row.update({"settings": settings, "seeds": len(group),
                    "seed_list": ",".join(str(_cell(v)) for v in sorted(group["seed"].dropna()))})
        for column in ACCURACY_COLUMNS:
            values = pd.to_numeric(group[column], errors="coerce").dropna().to_numpy(dtype=float)
            row[f"{column}_mean"] = float(values.mean()) if len(values) else None
            row[f"{column}_std"] = float(values.std(ddof=1)) if len(values) > 1 else None
        rows.append(row)
    return pd.DataFrame(rows)


def _row_labels(summary: pd.DataFrame) -> list[str]:
    """'method / variant' (or 'FFR, stage 1 only'), plus the settings that tell apart two rows that would
    otherwise share a cell, e.g. 'erm / none [lr=0.001]'."""
    return [f"{base} [{extra}]" if extra else base for base, extra in _row_parts(summary)]


def _row_parts(summary: pd.DataFrame) -> list[tuple[str, str]]:
    parsed = [json.loads(s) for s in summary["settings"]]
    cell = [(r.method, r.variant, r.stage, r.bias_ratio) for r in summary.itertuples()]
    varying: set[str] = set()
    for key in set(cell):
        members = [p for p, c in zip(parsed, cell) if c == key]
        for name in {k for p in members for k in p} - AXES:
            if len({json.dumps(p.get(name), default=str) for p in members}) > 1:
                varying.add(name)
    for short in (_short, str):  # full precision only when rounding would merge two settings into one cell
        parts = [(STAGE1_LABEL if r.variant == "ffr" and r.stage == 1 else
                  f"{r.method} / {VARIANT_LABELS.get(str(r.variant), r.variant)}",
                  ", ".join(f"{k.removeprefix('method_hparams.')}={short(p[k])}" for k in sorted(varying) if k in p))
                 for r, p in zip(summary.itertuples(), parsed)]
        if len(set(zip(parts, cell))) == len(parts):
            break
    return parts


def _short(value: Any) -> str:
    """A setting's value in a row label: sampled floats to 3 significant digits."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _bias_label(value: Any) -> str:
    ratio = number(value)
    return "bias –" if ratio is None else f"bias {ratio:g}"


def mean_std_cell(mean: Any, std: Any, n: int) -> str:
    """'55.0 ± 7.1 (n=2)'; one seed has no spread to show: '60.0 (n=1)'."""
    mean, std = number(mean), number(std)
    if mean is None:
        return "–"
    spread = f" ± {100 * std:.1f}" if n > 1 and std is not None else ""
    return f"{100 * mean:.1f}{spread} (n={n})"


def paper_tables(table: pd.DataFrame) -> list[tuple[str, list[str], list[list[str]]]]:
    """Per dataset: rows method × variant (none, USB, ASB, FFR; then 'FFR, stage 1 only'), columns bias
    ratios, cells test WGA mean ± std over seeds with n."""
    summary = summary_table(table)
    out = []
    for dataset, part in summary.groupby("dataset", sort=True):
        part = part.reset_index(drop=True)
        labels = _row_labels(part)
        biases = sorted(part["bias_ratio"].unique(), key=lambda b: (number(b) is None, number(b) or 0))
        keyed: dict[str, dict[str, str]] = {}
        order: dict[str, tuple] = {}
        for i, label in enumerate(labels):
            r = part.iloc[i]
            keyed.setdefault(label, {})[_bias_label(r.bias_ratio)] = mean_std_cell(r.test_wga_mean, r.test_wga_std,
                                                                               int(r.seeds))
            order[label] = _order_key(part, i, label)
        headers = ["test WGA (%)", *(_bias_label(b) for b in biases)]
        rows = [[label, *(keyed[label].get(h, "") for h in headers[1:])] for label in sorted(keyed, key=order.get)]
        out.append((str(dataset), headers, rows))
    return out


def _order_key(part: pd.DataFrame, i: int, label: str) -> tuple:
    r = part.iloc[i]
    methods = sorted(part["method"].astype(str).unique(), key=lambda m: (m != "erm", m))
    stage1 = r.variant == "ffr" and r.stage == 1
    variant = VARIANT_ORDER.index(r.variant) if r.variant in VARIANT_ORDER else len(VARIANT_ORDER)
    return (stage1, 0 if stage1 else methods.index(str(r.method)), variant, label)


def _pct(value: Any) -> str:
    fraction = number(value)
    return "–" if fraction is None else f"{100 * fraction:.1f}"


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _dataset_sections(table: pd.DataFrame) -> list[tuple[str, list[str], list[list[str]]]]:
    """(dataset, headers, rows) per dataset; group columns are the ones that dataset's runs have."""
    sections = []
    for dataset, part in table.groupby("dataset", sort=True):
        group_columns = [c for c in table.columns if c.startswith("test_acc[") and part[c].notna().any()]
        columns = [c for c in RUN_COLUMNS if c != "dataset"]
        headers = [HEADERS[c] + (" (%)" if c in ACCURACY_COLUMNS else "") for c in columns]
        # group sizes beside the accuracies: in the header when every run tested the same groups, else per cell
        sizes = {c: part[f"test_n[{c[9:-1]}]"].dropna().unique() if f"test_n[{c[9:-1]}]" in part else []
                 for c in group_columns}
        shared = {c: len(v) == 1 and part[f"test_n[{c[9:-1]}]"].notna().all() for c, v in sizes.items()}
        headers += [c[9:-1] + (f" (n={int(sizes[c][0])})" if shared[c] else "") for c in group_columns]
        rows = []
        for _, r in part.iterrows():
            cells = [_pct(r[c]) if c in ACCURACY_COLUMNS else _cell(r[c]) for c in columns]
            for c in group_columns:
                n = r.get(f"test_n[{c[9:-1]}]")
                cells.append(_pct(r[c]) + ("" if shared[c] or number(n) is None or number(r[c]) is None
                                           else f" (n={int(n)})"))
            rows.append(cells)
        sections.append((str(dataset), headers, rows))
    return sections


def _summary_rows(summary: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    headers = ["dataset", "row", "bias", "seeds"] + [f"{HEADERS[c]} (%)" for c in ACCURACY_COLUMNS]
    rows = []
    for dataset, part in summary.groupby("dataset", sort=True):
        part = part.reset_index(drop=True)
        for i, label in sorted(enumerate(_row_labels(part)), key=lambda il: _order_key(part, il[0], il[1])):
            r = part.iloc[i]
            cells = [str(dataset), label, _bias_label(r.bias_ratio)[5:], str(r.seed_list)]
            cells += [mean_std_cell(r[f"{c}_mean"], r[f"{c}_std"], int(r.seeds)) for c in ACCURACY_COLUMNS]
            rows.append(cells)
    return headers, rows


def text_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    lines = ["| " + " | ".join(esc(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


PAPER_NOTE = ("test worst-group accuracy (%), mean ± sample std over seeds, n = seeds; runs are grouped by every "
              "setting except the seed")


def probe_table(records: list[RunRecord]) -> tuple[list[str], list[list[str]]] | None:
    """Runs whose result holds probes (a method's ``analyze_features``, e.g. D3S's four): one row per run, val
    accuracy (%) per probe, its chance level in the header; None when no run has any."""
    found = [r for r in records if r.finished and isinstance(r.result.get("probes"), dict) and r.result["probes"]]
    if not found:
        return None
    names: dict[str, float | None] = {}
    for record in found:
        for name, probe in record.result["probes"].items():
            names.setdefault(name, number(probe.get("chance")))
    headers = ["run", "dataset", "method", "seed"] + [
        f"{name} (chance {100 * chance:.1f})" if chance is not None else name for name, chance in names.items()]
    rows = [[r.name, str(r.get("dataset", "?")), r.method_label, _cell(r.get("seed")),
             *(_pct((r.result["probes"].get(name) or {}).get("val")) for name in names)] for r in found]
    return headers, rows


PROBE_NOTE = "probes on frozen features (val accuracy %; class/background from the fg or bg half of the features)"


def render_text(table: pd.DataFrame, records: list[RunRecord] | None = None) -> str:
    parts = [f"dataset: {dataset}  {PAPER_NOTE}\n{text_table(headers, rows)}"
             for dataset, headers, rows in paper_tables(table)]
    for dataset, headers, rows in _dataset_sections(table):
        parts.append(f"dataset: {dataset}  runs (accuracies in %, test groups by name, n = test images)\n"
                     f"{text_table(headers, rows)}")
    probes = probe_table(records or [])
    if probes is not None:
        parts.append(f"{PROBE_NOTE}\n{text_table(*probes)}")
    summary = summary_table(table)
    if not summary.empty:
        parts.append("every setting: mean ± std over seeds (finished runs)\n" + text_table(*_summary_rows(summary)))
    return "\n\n".join(parts)


def render_markdown(table: pd.DataFrame, paths: list[str], plots: dict[str, list[str]],
                    records: list[RunRecord] | None = None) -> str:
    parts = ["# FFR report", "", f"Runs from: {', '.join(f'`{p}`' for p in paths)}. Accuracies in %; "
             "WGA = worst-group accuracy; val WGA is at the best epoch (the checkpoint that was tested).", ""]
    papers = {dataset: (headers, rows) for dataset, headers, rows in paper_tables(table)}
    for dataset, headers, rows in _dataset_sections(table):
        parts += [f"## {dataset}", ""]
        if dataset in papers:
            parts += [f"Test worst-group accuracy (%): {PAPER_NOTE[len('test worst-group accuracy (%), '):]}.", "",
                      markdown_table(*papers[dataset]), ""]
        parts += ["### Runs", "", markdown_table(headers, rows), ""]
        parts += [f"![{name}]({name})" for name in plots.get(dataset, [])] + [""]
    summary = summary_table(table)
    if not summary.empty:
        parts += ["## Every setting: mean ± std over seeds", "", markdown_table(*_summary_rows(summary)), ""]
    probes = probe_table(records or [])
    if probes is not None:
        parts += ["## Probes", "", PROBE_NOTE[0].upper() + PROBE_NOTE[1:] + ".", "", markdown_table(*probes), ""]
    return "\n".join(parts)


# --- plots and files --------------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "dataset"


def plot_test_wga(table: pd.DataFrame, dataset: str) -> bytes | None:
    """Test WGA by variant (x) and method (bars), error bars = sample std over seeds; one panel per bias ratio."""
    plt = pyplot()
    summary = summary_table(table)
    summary = summary[summary["dataset"].astype(str) == dataset].reset_index(drop=True)
    if summary.empty:
        return None
    stage1 = [r.variant == "ffr" and r.stage == 1 for r in summary.itertuples()]
    summary["x"] = [STAGE1_LABEL if s1 else VARIANT_LABELS.get(r.variant, r.variant)
                    for s1, r in zip(stage1, summary.itertuples())]
    summary["bar"] = [("erm" if s1 else str(method)) + (f" [{extra}]" if extra else "")
                      for s1, method, (_, extra) in zip(stage1, summary["method"], _row_parts(summary))]
    biases = sorted(summary["bias_ratio"].unique(), key=lambda b: (number(b) is None, number(b) or 0))
    xs = [x for x in [*VARIANT_LABELS.values(), STAGE1_LABEL] if x in set(summary["x"])]
    xs += sorted(set(summary["x"]) - set(xs))
    bars = sorted(summary["bar"].unique(), key=lambda m: (m != "erm", m))
    fig, axes = plt.subplots(1, len(biases), figsize=(max(5.0, 1.4 * len(xs)) * len(biases), 4), squeeze=False)
    width = 0.8 / len(bars)
    for ax, bias in zip(axes[0], biases):
        part = summary[summary["bias_ratio"].apply(lambda b, bias=bias: number(b) == number(bias))]
        for j, bar in enumerate(bars):
            rows = [part[(part["x"] == x) & (part["bar"] == bar)] for x in xs]
            means = [100 * r["test_wga_mean"].iloc[0] if len(r) and number(r["test_wga_mean"].iloc[0]) is not None
                     else np.nan for r in rows]
            stds = [100 * r["test_wga_std"].iloc[0] if len(r) and number(r["test_wga_std"].iloc[0]) is not None
                    else np.nan for r in rows]
            ax.bar(np.arange(len(xs)) - 0.4 + width * (j + 0.5), means, width, yerr=stds, capsize=3, label=bar)
        ax.set_xticks(np.arange(len(xs)), xs, rotation=20, ha="right")
        ax.set(ylabel="test worst-group accuracy (%)", ylim=(0, 100), title=f"{dataset}, {_bias_label(bias)}")
        ax.grid(axis="y", alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return figure_png(fig)


def write_report(records: list[RunRecord], paths: list[str], out: str) -> list[str]:
    """report.md, report.csv and the plots under ``out`` (local or s3://); returns what was written."""
    fs, inner = filesystem(out)
    if fs.exists(inner) and not fs.isdir(inner):
        raise FFRError(f"--out {out!r} is a file; expected a directory")
    ensure_dir(fs, inner)
    table = runs_table(records)
    files: dict[str, bytes] = {}
    plots: dict[str, list[str]] = {}
    for dataset in sorted(table["dataset"].astype(str).unique()):
        chosen = [r for r in records if str(r.get("dataset", "?")) == dataset]
        for prefix, plot in (("test_wga", lambda _records, d: plot_test_wga(table, d)),
                             ("val_wga_curves", plot_val_curves), ("test_group_acc", plot_test_groups)):
            image = plot(chosen, dataset)
            if image is not None:
                name = f"{prefix}_{_slug(dataset)}.png"
                files[name] = image
                plots.setdefault(dataset, []).append(name)
    files["report.csv"] = table.to_csv(index=False).encode()
    files["report.md"] = render_markdown(table, paths, plots, records).encode()
    written = []
    for name, data in files.items():
        with fs.open(f"{inner.rstrip('/')}/{name}", "wb") as f:
            f.write(data)
        written.append(f"{out.rstrip('/')}/{name}")
    return written


# --- CLI --------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="RUNS_ROOT",
                        help="run directories or folders holding them (searched recursively; local or s3://)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="also write report.md, report.csv and PNG plots here (local or s3://)")


def run(args: argparse.Namespace) -> int:
    records = collect(args.paths)
    print(render_text(runs_table(records), records))
    if args.out:
        written = write_report(records, args.paths, args.out)
        print(f"\nwrote {len(written)} files to {args.out}: {', '.join(w.rsplit('/', 1)[-1] for w in written)}")
    return 0
