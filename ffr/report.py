"""``ffr report RUNS_ROOT... [--select RULE] [--out DIR]``: paper tables, per-run tables and plots from run
directories.

A run directory is any folder holding ``ffr_result.json`` (finished; ``result.json`` beside a config.json
for runs written before the rename), or only ``metrics.jsonl`` (unfinished: still training, killed, or
``stopped.json``: stopped early by a sweep's ASHA). ``ffr.runs`` finds and reads them, each run once however
many copies exist (this module makes tables, plots and files from what it reads). Roots are searched
recursively, locally or on ``s3://``, so a run, a sweep folder (Tune's own files in it are skipped) or a whole
storage path works.

Runs are grouped by every setting except the seed (the config minus seeds, seed-dependent paths and execution
fields), so runs that differ in bias ratio or a hyperparameter are never averaged as seeds. Per dataset ×
variant × method × bias ratio, ``--select`` (``ffr.runs.protocol``) picks which setting is reported: ``val-wga``
(FFR's rule, the default), ``val-worst-class``, ``oracle`` (labelled as selecting on test) or ``none`` (every
setting, a hyperparameter that differs within a cell becoming part of the row label). Per dataset it prints:

- the *paper table*: rows method × variant (none, USB, ASB, FFR, then "FFR, stage 1 only"), columns bias
  ratios, each cell test WGA mean ± sample std over seeds, n, and the selected hyperparameters;
- the *protocol table*: one row per cell with the selected setting, n, and test WGA, average accuracy,
  training-proportion-weighted average accuracy and mean-group accuracy, each mean ± std (standard error),
  and a footnote saying how many settings were compared;
- the *(B, G) diagnostic* of runs that trained on synthetic images (held-out synthetic accuracy per group and
  the real-vs-synthetic probe, ``ffr.training.diagnostic``);
- one row per run (best epoch, val/test WGA, test mean-group and overall accuracy, each test group's accuracy
  by name with its size), and every setting with all its accuracies.

With ``--out`` it also writes ``report.md``, ``report.csv`` (raw fractions, one row per run), ``protocol.csv``,
``protocol.md`` and ``protocol.tex`` (the protocol and diagnostic tables; LaTeX with booktabs) and PNG plots:
test WGA by variant × method with error bars over seeds, validation WGA per epoch, and test accuracy per group.
The command line over it is :mod:`ffr.report_command`.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np
import pandas as pd

from ffr.errors import FFRError
from ffr.runs import DIAGNOSTIC, METRICS, RESULT, RunRecord, find_runs, number, unique_runs
from ffr.runs.plots import figure_png, plot_test_groups, plot_val_curves, pyplot
from ffr.runs.protocol import (
    DEFAULT_SELECTION,
    SELECTION_TEXT,
    TEST_METRICS,
    Cell,
    Stat,
    chosen_text,
    select,
)
from ffr.storage import ensure_dir, filesystem

RUN_COLUMNS = ("run", "dataset", "variant", "method", "stage", "seed", "status", "best_epoch", "val_wga",
               "test_wga", "test_mean_group_acc", "test_overall_acc")
HEADERS = {"run": "run", "dataset": "dataset", "variant": "variant", "method": "method", "stage": "stage",
           "seed": "seed", "status": "status", "best_epoch": "best ep", "val_wga": "val WGA",
           "test_wga": "test WGA", "test_mean_group_acc": "test mean-grp", "test_overall_acc": "test overall",
           "generator": "generator"}
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
    row["generator"] = (record.result or {}).get("generator")  # what made the synthetic images, if any
    row["settings"] = record.setting_key()
    row.update({f"test_acc[{name}]": acc for name, acc in record.test_group_accuracies().items()})
    row.update({f"test_n[{name}]": n for name, n in record.test_group_sizes().items()})
    return row


def collect(paths: list[str]) -> list[RunRecord]:
    """Runs under all ``paths``, sorted by dataset, variant, method, stage, seed; error if there are none."""
    records = unique_runs([record for path in paths for record in find_runs(str(path).rstrip("/") or "/")])
    if not records:
        raise FFRError(f"no runs (folders with {RESULT} or {METRICS}) found under {', '.join(map(repr, paths))}")
    return sorted(records, key=_sort_key)


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
        group = group.sort_values("path").drop_duplicates("seed")  # one per seed (ffr.runs.protocol.one_per_seed)
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


def cell_label(cell: Cell) -> str:
    """'method / variant' or 'FFR, stage 1 only'; without selection, plus the settings that tell a cell's rows
    apart, e.g. 'erm / none [lr=0.001]'."""
    base = STAGE1_LABEL if cell.stage1_only else f"{cell.method} / {VARIANT_LABELS.get(cell.variant, cell.variant)}"
    shown = {"generator": cell.generator} if cell.several_generators and cell.generator is not None else {}
    if cell.selection == "none":
        shown.update(cell.chosen)
    return f"{base} [{chosen_text(shown)}]" if shown else base


def _cell_order(cells: list[Cell]):
    methods = sorted({c.method for c in cells}, key=lambda m: (m != "erm", m))

    def key(cell: Cell) -> tuple:
        variant = VARIANT_ORDER.index(cell.variant) if cell.variant in VARIANT_ORDER else len(VARIANT_ORDER)
        return (cell.stage1_only, 0 if cell.stage1_only else methods.index(cell.method), variant, cell_label(cell),
                cell.bias_ratio is None, cell.bias_ratio or 0)

    return key


def _by_dataset(cells: list[Cell]) -> dict[str, list[Cell]]:
    out: dict[str, list[Cell]] = {}
    for cell in cells:
        out.setdefault(cell.dataset, []).append(cell)
    return {d: sorted(part, key=_cell_order(part)) for d, part in sorted(out.items())}


def _wga_cell(cell: Cell) -> str:
    """The compact table's cell: test WGA mean ± std (n), and the chosen hyperparameters when a selection
    compared settings: '70.0 ± 14.1 (n=2; lr=0.001)'."""
    stat = cell.test["worst_group_acc"]
    text = mean_std_cell(stat.mean, stat.std, stat.n)
    if cell.selection != "none" and cell.compared > 1 and cell.chosen and text != "–":
        text = f"{text[:-1]}; {chosen_text(cell.chosen)})"
    return text


def paper_tables(cells: list[Cell]) -> list[tuple[str, list[str], list[list[str]]]]:
    """Per dataset: rows method × variant (none, USB, ASB, FFR; then 'FFR, stage 1 only'), columns bias
    ratios, cells test WGA mean ± std over seeds with n (and the selected hyperparameters)."""
    out = []
    for dataset, part in _by_dataset(cells).items():
        biases = sorted({c.bias_ratio for c in part}, key=lambda b: (b is None, b or 0))
        keyed: dict[str, dict[str, str]] = {}
        for cell in part:
            keyed.setdefault(cell_label(cell), {})[_bias_label(cell.bias_ratio)] = _wga_cell(cell)
        headers = ["test WGA (%)", *(_bias_label(b) for b in biases)]
        out.append((dataset, headers, [[label, *(cells_.get(h, "") for h in headers[1:])]
                                       for label, cells_ in keyed.items()]))
    return out


def stat_cell(stat: Stat) -> str:
    """'55.0 ± 7.1 (SE 5.0)' in %; one seed: '60.0'."""
    if stat.mean is None:
        return "–"
    if stat.std is None:
        return f"{100 * stat.mean:.1f}"
    return f"{100 * stat.mean:.1f} ± {100 * stat.std:.1f} (SE {100 * stat.se:.1f})"


PROTOCOL_HEADERS = ["row", "bias", "selected", "n", *(f"test {label} (%)" for _, label in TEST_METRICS)]


def protocol_tables(cells: list[Cell]) -> list[tuple[str, list[str], list[list[str]]]]:
    """Per dataset, one row per cell: the chosen setting, its seeds and its four test columns."""
    out = []
    for dataset, part in _by_dataset(cells).items():
        rows = [[cell_label(c), _bias_label(c.bias_ratio)[5:], chosen_text(c.chosen) or "–", str(c.n),
                 *(stat_cell(c.test[m]) for m, _ in TEST_METRICS)] for c in part]
        out.append((dataset, PROTOCOL_HEADERS, rows))
    return out


def protocol_note(cells: list[Cell], selection: str) -> str:
    """The footnote: the rule, and how many settings were compared."""
    compared = [c.compared for c in cells]
    spread = (f"{min(compared)}" if min(compared) == max(compared) else f"{min(compared)}–{max(compared)}") \
        if compared else "0"
    varying = sorted({k.removeprefix("method_hparams.") for c in cells for k in c.chosen})
    text = (f"Selection {selection}: {SELECTION_TEXT[selection]}. Settings compared per cell: {spread}"
            + (f" (differing in {', '.join(varying)})" if varying else "")
            + f"; {len(cells)} rows, {sum(c.n for c in cells)} runs. Test accuracies in %, mean ± sample std over "
              "seeds (SE = standard error); n = seeds; avg acc = over test images; train-weighted = per-group "
              "accuracy weighted by the training group proportions; mean-group = balanced accuracy.")
    return text


DIAGNOSTIC_NOTE = ("(B, G) diagnostic: the selected checkpoint on held-out synthetic images (never trained on by "
                   "any variant), accuracy per (class, bias, source), and a linear probe on frozen penultimate "
                   "features that tells real from synthetic images (balanced per group and source, held out; "
                   "chance 50 %). Mean ± std over seeds, in %.")


def diagnostic_tables(cells: list[Cell]) -> list[tuple[str, list[str], list[list[str]]]]:
    """Per dataset, the cells whose runs carry the (B, G) diagnostic (variants that train on synthetic images)."""
    out = []
    for dataset, part in _by_dataset(cells).items():
        part = [c for c in part if any(r.result.get(DIAGNOSTIC) for r in c.records)]
        if not part:
            continue
        groups: list[str] = []
        for cell in part:
            for record in cell.records:
                groups += [g for g in (record.result.get(DIAGNOSTIC) or {}).get("accuracy") or {} if g not in groups]
        order = [n for c in part for r in c.records for n in r.group_names().values()]
        groups.sort(key=lambda g: (order.index(g.rsplit("/", 1)[0]) if g.rsplit("/", 1)[0] in order else len(order),
                                   g.rsplit("/", 1)[1] != "real", g))  # group order, real before synthetic
        headers = ["row", "bias", "n", "probe real-vs-synthetic acc", "synthetic WGA", "real test WGA",
                   *(f"acc {g}" for g in groups)]
        rows = []
        for cell in part:
            diags = [r.result.get(DIAGNOSTIC) or {} for r in cell.records]
            probe = Stat.of([number((d.get("probe") or {}).get("accuracy")) for d in diags])
            synthetic = Stat.of([number((d.get("synthetic") or {}).get("worst_group_acc")) for d in diags])
            group_stats = [Stat.of([number((d.get("accuracy") or {}).get(g)) for d in diags]) for g in groups]
            rows.append([cell_label(cell), _bias_label(cell.bias_ratio)[5:], str(probe.n),
                         *(mean_std_cell(s.mean, s.std, s.n).split(" (n=")[0]
                           for s in (probe, synthetic, cell.test["worst_group_acc"], *group_stats))])
        out.append((dataset, headers, rows))
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
        if "generator" in part and part["generator"].notna().any():
            columns.append("generator")
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


ORACLE_BANNER = "ORACLE SELECTION: hyperparameters chosen on TEST worst-group accuracy (an upper bound, not a result)"


def protocol_text(cells: list[Cell], selection: str, title: str = "dataset") -> str:
    """Per dataset the paper table, the protocol table and the (B, G) diagnostic, then the footnote;
    ``title`` heads each table (e.g. a study's entry)."""
    parts = [ORACLE_BANNER] if selection == "oracle" else []
    for (dataset, headers, rows), (_, p_headers, p_rows) in zip(paper_tables(cells), protocol_tables(cells)):
        name = f"{title}: {dataset}" if title != "dataset" else f"dataset: {dataset}"
        parts.append(f"{name}  {PAPER_NOTE}; selection: {selection}\n{text_table(headers, rows)}")
        parts.append(f"{name}  protocol table ({selection})\n{text_table(p_headers, p_rows)}")
    for dataset, headers, rows in diagnostic_tables(cells):
        name = f"{title}: {dataset}" if title != "dataset" else f"dataset: {dataset}"
        parts.append(f"{name}  {DIAGNOSTIC_NOTE}\n{text_table(headers, rows)}")
    if cells:
        parts.append(protocol_note(cells, selection))
    return "\n\n".join(parts)


def render_text(table: pd.DataFrame, cells: list[Cell] | None = None, selection: str = "none",
                records: list[RunRecord] | None = None) -> str:
    cells = cells if cells is not None else []
    parts = [protocol_text(cells, selection)] if cells or selection == "oracle" else []
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
                    cells: list[Cell] | None = None, selection: str = "none",
                    records: list[RunRecord] | None = None) -> str:
    cells = cells if cells is not None else []
    parts = ["# FFR report", "", f"Runs from: {', '.join(f'`{p}`' for p in paths)}. Accuracies in %; "
             "WGA = worst-group accuracy; val WGA is at the best epoch (the checkpoint that was tested).", ""]
    if selection == "oracle":
        parts += ["**Oracle selection: hyperparameters chosen on test worst-group accuracy (an upper bound, not "
                  "a result).**", ""]
    papers = {dataset: (headers, rows) for dataset, headers, rows in paper_tables(cells)}
    protocols = {dataset: (headers, rows) for dataset, headers, rows in protocol_tables(cells)}
    diagnostics = {dataset: (headers, rows) for dataset, headers, rows in diagnostic_tables(cells)}
    note = protocol_note(cells, selection) if cells else ""
    for dataset, headers, rows in _dataset_sections(table):
        parts += [f"## {dataset}", ""]
        if dataset in papers:
            parts += [f"Test worst-group accuracy (%): {PAPER_NOTE[len('test worst-group accuracy (%), '):]}; "
                      f"selection: {selection}.", "", markdown_table(*papers[dataset]), "",
                      f"### Protocol table ({selection})", "", markdown_table(*protocols[dataset]), "", note, ""]
        if dataset in diagnostics:
            parts += ["### (B, G) diagnostic", "", DIAGNOSTIC_NOTE, "", markdown_table(*diagnostics[dataset]), ""]
        parts += ["### Runs", "", markdown_table(headers, rows), ""]
        parts += [f"![{name}]({name})" for name in plots.get(dataset, [])] + [""]
    summary = summary_table(table)
    if not summary.empty:
        parts += ["## Every setting: mean ± std over seeds", "", markdown_table(*_summary_rows(summary)), ""]
    probes = probe_table(records or [])
    if probes is not None:
        parts += ["## Probes", "", PROBE_NOTE[0].upper() + PROBE_NOTE[1:] + ".", "", markdown_table(*probes), ""]
    return "\n".join(parts)


def latex_table(headers: list[str], rows: list[list[str]], caption: str) -> str:
    """A booktabs tabular; '±' becomes $\\pm$ and the standard error goes small after the value."""
    special = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$",
               "{": r"\{", "}": r"\}"}

    def esc(text: str) -> str:
        text = "".join(special.get(char, char) for char in text)
        text = re.sub(r"\(SE ([0-9.]+)\)", r"{\\scriptsize (\1)}", text)
        return text.replace("±", r"$\pm$").replace("–", "--")

    lines = [f"% {esc(caption)}", r"\begin{tabular}{" + "l" * len(headers) + "}", r"\toprule",
             " & ".join(esc(h) for h in headers) + r" \\", r"\midrule"]
    lines += [" & ".join(esc(c) for c in row) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines)


def protocol_files(cells: list[Cell], selection: str) -> dict[str, bytes]:
    """protocol.csv (raw fractions), protocol.md and protocol.tex: the protocol tables of every dataset."""
    records = []
    for cell in cells:
        row = {"dataset": cell.dataset, "variant": cell.variant, "method": cell.method, "stage": cell.stage,
               "bias_ratio": cell.bias_ratio, "row": cell_label(cell), "selection": selection,
               "selected": json.dumps(cell.chosen, sort_keys=True, default=str), "settings_compared": cell.compared,
               "n": cell.n, "seeds": ",".join(map(str, cell.seeds)),
               "selection_score_mean": None if cell.score is None else cell.score.mean,
               "selection_score_std": None if cell.score is None else cell.score.std}
        for metric, _ in TEST_METRICS:
            stat = cell.test[metric]
            row.update({f"test_{metric}_mean": stat.mean, f"test_{metric}_std": stat.std,
                        f"test_{metric}_se": stat.se, f"test_{metric}_n": stat.n})
        diags = [r.result.get(DIAGNOSTIC) for r in cell.records if r.result.get(DIAGNOSTIC)]
        if diags:
            for name, values in (("probe_acc", [(d.get("probe") or {}).get("accuracy") for d in diags]),
                                 ("synthetic_wga", [(d.get("synthetic") or {}).get("worst_group_acc") for d in diags])):
                stat = Stat.of([number(v) for v in values])
                row.update({f"diagnostic_{name}_mean": stat.mean, f"diagnostic_{name}_std": stat.std})
        records.append(row)
    note = protocol_note(cells, selection)
    md = [f"# Protocol table ({selection})", ""]
    tex = [f"% ffr report --select {selection}", ""]
    for dataset, headers, rows in protocol_tables(cells):
        md += [f"## {dataset}", "", markdown_table(headers, rows), ""]
        tex += [latex_table(headers, rows, f"{dataset}, selection {selection}"), ""]
    for dataset, headers, rows in diagnostic_tables(cells):
        md += [f"## {dataset}: (B, G) diagnostic", "", markdown_table(headers, rows), ""]
        tex += [latex_table(headers, rows, f"{dataset}, (B, G) diagnostic"), ""]
    md += [note, ""]
    tex += ["% " + note, ""]
    return {"protocol.csv": pd.DataFrame(records).to_csv(index=False).encode(),
            "protocol.md": "\n".join(md).encode(), "protocol.tex": "\n".join(tex).encode()}


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


def write_report(records: list[RunRecord], paths: list[str], out: str, selection: str = DEFAULT_SELECTION) -> list[str]:
    """report.md, report.csv, the protocol tables (protocol.csv/.md/.tex) and the plots under ``out`` (local or
    s3://); returns what was written."""
    fs, inner = filesystem(out)
    if fs.exists(inner) and not fs.isdir(inner):
        raise FFRError(f"--out {out!r} is a file; expected a directory")
    ensure_dir(fs, inner)
    table = runs_table(records)
    cells = select(records, selection)
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
    files["report.md"] = render_markdown(table, paths, plots, cells, selection, records).encode()
    files.update(protocol_files(cells, selection))
    written = []
    for name, data in files.items():
        with fs.open(f"{inner.rstrip('/')}/{name}", "wb") as f:
            f.write(data)
        written.append(f"{out.rstrip('/')}/{name}")
    return written
