"""``ffr report RUNS_ROOT... [--out DIR]``: one table (and plots) from finished and unfinished runs.

A run directory is any folder holding ``result.json`` (finished) or only ``metrics.jsonl`` (unfinished:
still training, or killed) — see the run directory contract in ``ffr/training/rundir.py``. Roots are
searched recursively, locally or on ``s3://``, so a sweep folder or a whole storage path works. The
report prints per dataset: best epoch, validation and test worst-group accuracy (WGA), test mean-group
and overall accuracy and every test group's accuracy by name; then mean ± std over seeds. With ``--out``
it also writes ``report.md``, ``report.csv`` (raw fractions) and PNG plots: per-epoch validation WGA
curves and test per-group accuracy bars, one of each per dataset.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ffr.errors import FFRError
from ffr.storage import filesystem, is_remote

RESULT, METRICS, CONFIG = "result.json", "metrics.jsonl", "config.json"
RUN_COLUMNS = ("run", "dataset", "variant", "method", "stage", "seed", "status", "best_epoch", "val_wga",
               "test_wga", "test_mean_group_acc", "test_overall_acc")
HEADERS = {"run": "run", "dataset": "dataset", "variant": "variant", "method": "method", "stage": "stage",
           "seed": "seed", "status": "status", "best_epoch": "best ep", "val_wga": "val WGA",
           "test_wga": "test WGA", "test_mean_group_acc": "test mean-grp", "test_overall_acc": "test overall"}
ACCURACY_COLUMNS = ("val_wga", "test_wga", "test_mean_group_acc", "test_overall_acc")


@dataclass
class RunRecord:
    """One run directory as read from storage."""

    path: str
    result: dict | None
    config: dict
    metrics: list[dict] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.result is not None

    def get(self, key: str, default: Any = None) -> Any:
        """A field from result.json, else config.json, else the metrics (stage only)."""
        for source in (self.result or {}, self.config):
            value = source.get(key)
            if isinstance(value, dict) and "name" in value:  # a config section such as dataset: {name: ...}
                value = value["name"]
            if value is not None and not isinstance(value, (dict, list)):
                return value
        if key == "stage" and self.metrics:
            return self.metrics[-1].get("stage", default)
        return default

    @property
    def name(self) -> str:
        return str(self.get("run_name") or self.path.rstrip("/").rsplit("/", 1)[-1])

    @property
    def method_label(self) -> str:
        role = self.config.get("role")
        method = str(self.get("method", "?"))
        return f"{method} ({role})" if role and role != "train" else method

    def group_names(self) -> dict[int, str]:
        names = (self.result or {}).get("group_names") or {}
        return {int(g): str(n) for g, n in names.items()}

    def test_group_accuracies(self) -> dict[str, float | None]:
        """Test accuracy per group, keyed by group name, in group-id order."""
        test = (self.result or {}).get("test") or {}
        names = self.group_names()
        ids = sorted(int(k[len("acc_group_"):]) for k in test if re.fullmatch(r"acc_group_\d+", k))
        return {names.get(g, f"group {g}"): _number(test[f"acc_group_{g}"]) for g in ids}

    def val_curve(self) -> tuple[list[int], list[float]]:
        """(epochs, validation WGA) of this run's own stage, in epoch order."""
        stage = self.get("stage")
        records = [r for r in self.metrics if stage is None or r.get("stage") in (None, stage)]
        points = sorted((int(r["epoch"]), _number(r.get("val_worst_group_acc"))) for r in records if "epoch" in r)
        return [e for e, _ in points], [float("nan") if v is None else v for _, v in points]

    def row(self) -> dict[str, Any]:
        test = (self.result or {}).get("test") or {}
        if self.finished:
            best_epoch = self.result.get("best_epoch")
            val_wga = _number(self.result.get("best_val_worst_group_acc"))
        else:  # best so far, by the same rule as training: highest val WGA, earliest epoch on ties
            epochs, values = self.val_curve()
            valid = [(v, -e) for e, v in zip(epochs, values) if not math.isnan(v)]
            best = max(valid) if valid else None
            best_epoch, val_wga = (-best[1], best[0]) if best else (None, None)
        row = {"run": self.name, "dataset": self.get("dataset", "?"), "variant": self.get("variant", "?"),
               "method": self.method_label, "stage": self.get("stage"), "seed": self.get("seed"),
               "status": "finished" if self.finished else "unfinished", "best_epoch": best_epoch,
               "val_wga": val_wga, "test_wga": _number(test.get("worst_group_acc")),
               "test_mean_group_acc": _number(test.get("mean_group_acc")),
               "test_overall_acc": _number(test.get("overall_acc")), "path": self.path}
        row.update({f"test_acc[{name}]": acc for name, acc in self.test_group_accuracies().items()})
        return row


def _number(value: Any) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


# --- reading ----------------------------------------------------------------------------------------------


def _uri(root: str, inner: str) -> str:
    """An fsspec path back to the form the user gave (s3://bucket/... or a local path)."""
    return f"{root.split('://', 1)[0]}://{inner}" if is_remote(root) else inner


def _read_json(fs, inner: str, where: str) -> dict:
    try:
        data = json.loads(fs.cat_file(inner))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FFRError(f"run file {where!r} is not valid JSON ({e.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise FFRError(f"run file {where!r} holds a {type(data).__name__}; expected a JSON object")
    return data


def _read_metrics(fs, inner: str, where: str) -> list[dict]:
    """Per-epoch records; a torn line (a writer killed mid-write) is skipped with a warning, and a resumed
    run's repeated epochs keep their latest record."""
    records: dict[tuple[Any, Any], dict] = {}
    bad = 0
    for line in fs.cat_file(inner).decode("utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(record, dict):
            records[(record.get("stage"), record.get("epoch"))] = record
        else:
            bad += 1
    if bad:
        warnings.warn(f"{where}: skipped {bad} unreadable line(s)", stacklevel=3)
    return sorted(records.values(), key=lambda r: (r.get("stage") or 0, r.get("epoch") or 0))


def find_runs(root: str) -> list[RunRecord]:
    """Every run directory under ``root`` (recursively; ``root`` itself may be one)."""
    fs, inner = filesystem(root)
    if is_remote(root):
        fs.invalidate_cache()  # runs may have been written by other processes since the last listing
    if not fs.exists(inner):
        raise FFRError(f"runs root {root!r} does not exist")
    files = [str(p) for p in fs.find(inner)] if fs.isdir(inner) else []
    by_dir: dict[str, set[str]] = {}
    for path in files:
        directory, _, name = path.rpartition("/")
        if name in (RESULT, METRICS, CONFIG) and not re.search(r"/checkpoint_[^/]*(/|$)", directory + "/"):
            by_dir.setdefault(directory, set()).add(name)
    records = []
    for directory, names in sorted(by_dir.items()):
        if RESULT not in names and METRICS not in names:
            continue
        where = _uri(root, directory)
        result = _read_json(fs, f"{directory}/{RESULT}", f"{where}/{RESULT}") if RESULT in names else None
        config = _read_json(fs, f"{directory}/{CONFIG}", f"{where}/{CONFIG}") if CONFIG in names else {}
        metrics = _read_metrics(fs, f"{directory}/{METRICS}", f"{where}/{METRICS}") if METRICS in names else []
        records.append(RunRecord(where, result, config, metrics))
    return records


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
    return pd.DataFrame([r.row() for r in records])


def summary_table(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of the accuracy columns, per (dataset, variant, method, stage); finished only."""
    done = table[table["status"] == "finished"].copy()
    keys = ["dataset", "variant", "method", "stage"]
    if done.empty:
        return pd.DataFrame(columns=[*keys, "seeds"])
    done["stage"] = done["stage"].fillna(-1)
    rows = []
    for key, group in done.groupby(keys, sort=True, dropna=False):
        row = dict(zip(keys, key))
        row["stage"] = None if row["stage"] == -1 else row["stage"]
        row["seeds"] = len(group)
        for column in ACCURACY_COLUMNS:
            values = pd.to_numeric(group[column], errors="coerce").dropna().to_numpy(dtype=float)
            row[f"{column}_mean"] = float(values.mean()) if len(values) else None
            row[f"{column}_std"] = float(values.std(ddof=0)) if len(values) else None
        rows.append(row)
    return pd.DataFrame(rows)


def _pct(value: Any) -> str:
    number = _number(value)
    return "–" if number is None else f"{100 * number:.1f}"


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
        headers += [c[len("test_acc["):-1] for c in group_columns]
        rows = []
        for _, r in part.iterrows():
            cells = [_pct(r[c]) if c in ACCURACY_COLUMNS else _cell(r[c]) for c in columns]
            cells += [_pct(r[c]) for c in group_columns]
            rows.append(cells)
        sections.append((str(dataset), headers, rows))
    return sections


def _summary_rows(summary: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    headers = ["dataset", "variant", "method", "stage", "seeds"] + [f"{HEADERS[c]} (%)" for c in ACCURACY_COLUMNS]
    rows = []
    for _, r in summary.iterrows():
        cells = [_cell(r[c]) for c in ("dataset", "variant", "method", "stage", "seeds")]
        for c in ACCURACY_COLUMNS:
            mean, std = _number(r[f"{c}_mean"]), _number(r[f"{c}_std"])
            cells.append("–" if mean is None else f"{100 * mean:.1f} ± {100 * (std or 0):.1f}")
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


def render_text(table: pd.DataFrame) -> str:
    parts = []
    for dataset, headers, rows in _dataset_sections(table):
        parts.append(f"dataset: {dataset}  (accuracies in %, test groups by name)\n{text_table(headers, rows)}")
    summary = summary_table(table)
    if not summary.empty:
        parts.append("mean ± std over seeds (finished runs)\n" + text_table(*_summary_rows(summary)))
    return "\n\n".join(parts)


def render_markdown(table: pd.DataFrame, paths: list[str], plots: dict[str, list[str]]) -> str:
    parts = ["# FFR report", "", f"Runs from: {', '.join(f'`{p}`' for p in paths)}. Accuracies in %; "
             "WGA = worst-group accuracy; val WGA is at the best epoch (the checkpoint that was tested).", ""]
    for dataset, headers, rows in _dataset_sections(table):
        parts += [f"## {dataset}", "", markdown_table(headers, rows), ""]
        parts += [f"![{name}]({name})" for name in plots.get(dataset, [])] + [""]
    summary = summary_table(table)
    if not summary.empty:
        parts += ["## Mean ± std over seeds", "", markdown_table(*_summary_rows(summary)), ""]
    return "\n".join(parts)


# --- plots and files --------------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "dataset"


def _labels(records: list[RunRecord]) -> list[str]:
    """Short legend labels; the run name is added where two runs would read the same."""
    short = [f"{r.get('variant', '?')}/{r.method_label} s{r.get('seed', '?')} st{r.get('stage', '?')}"
             for r in records]
    return [s if short.count(s) == 1 else f"{s} ({r.name})" for s, r in zip(short, records)]


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def plot_val_curves(records: list[RunRecord], dataset: str) -> bytes | None:
    """Validation WGA per epoch, one line per run, the best epoch marked."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in records if r.val_curve()[0]]
    if not runs:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for record, label in zip(runs, _labels(runs)):
        epochs, values = record.val_curve()
        (line,) = ax.plot(epochs, [100 * v for v in values], marker=".", label=label)
        best = record.row()["best_epoch"]
        if best in epochs:
            ax.plot([best], [100 * values[epochs.index(best)]], "o", color=line.get_color(), markersize=8,
                    fillstyle="none")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel="val worst-group accuracy (%)", title=f"{dataset}: validation WGA per epoch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _png(fig)


def plot_test_groups(records: list[RunRecord], dataset: str) -> bytes | None:
    """Test accuracy per group, one bar per run in each group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in records if r.test_group_accuracies()]
    if not runs:
        return None
    groups: list[str] = []
    for r in runs:
        groups += [g for g in r.test_group_accuracies() if g not in groups]
    width = 0.8 / len(runs)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(groups)), 4))
    x = np.arange(len(groups))
    for i, (record, label) in enumerate(zip(runs, _labels(runs))):
        accs = record.test_group_accuracies()
        heights = [np.nan if accs.get(g) is None else 100 * accs[g] for g in groups]
        ax.bar(x - 0.4 + width * (i + 0.5), heights, width, label=label)
    ax.set_xticks(x, groups, rotation=30, ha="right")
    ax.set(ylabel="test accuracy (%)", ylim=(0, 100), title=f"{dataset}: test accuracy per group")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _png(fig)


def write_report(records: list[RunRecord], paths: list[str], out: str) -> list[str]:
    """report.md, report.csv and the plots under ``out`` (local or s3://); returns what was written."""
    fs, inner = filesystem(out)
    if fs.exists(inner) and not fs.isdir(inner):
        raise FFRError(f"--out {out!r} is a file; expected a directory")
    fs.makedirs(inner, exist_ok=True)
    table = runs_table(records)
    files: dict[str, bytes] = {}
    plots: dict[str, list[str]] = {}
    for dataset in sorted(table["dataset"].astype(str).unique()):
        chosen = [r for r in records if str(r.get("dataset", "?")) == dataset]
        for prefix, plot in (("val_wga_curves", plot_val_curves), ("test_group_acc", plot_test_groups)):
            image = plot(chosen, dataset)
            if image is not None:
                name = f"{prefix}_{_slug(dataset)}.png"
                files[name] = image
                plots.setdefault(dataset, []).append(name)
    files["report.csv"] = table.to_csv(index=False).encode()
    files["report.md"] = render_markdown(table, paths, plots).encode()
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
    print(render_text(runs_table(records)))
    if args.out:
        written = write_report(records, args.paths, args.out)
        print(f"\nwrote {len(written)} files to {args.out}: {', '.join(w.rsplit('/', 1)[-1] for w in written)}")
    return 0
