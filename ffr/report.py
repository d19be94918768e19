"""``ffr report RUNS_ROOT... [--out DIR]``: paper tables, per-run tables and plots from run directories.

A run directory is any folder holding ``ffr_result.json`` (finished; ``result.json`` beside a config.json
for runs written before the rename), or only ``metrics.jsonl`` (unfinished: still training, killed, or
``stopped.json``: stopped early by a sweep's ASHA) — see ``ffr/training/rundir.py``. Roots are searched
recursively, locally or on ``s3://``, so a run, a sweep folder (Tune's own files in it are skipped) or a
whole storage path works.

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
from ffr.storage import ensure_dir, filesystem, is_remote
from ffr.training.rundir import CONFIG, LEGACY_RESULT, METRICS, RESULT, STOPPED

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
    stopped: dict | None = None  # a sweep scheduler (ASHA) stopped it early

    @property
    def finished(self) -> bool:
        return self.result is not None

    @property
    def status(self) -> str:
        return "finished" if self.finished else "stopped" if self.stopped is not None else "unfinished"

    def get(self, key: str, default: Any = None) -> Any:
        """A field from the result file, else config.json, else the metrics (stage only)."""
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
               "status": self.status, "best_epoch": best_epoch,
               "val_wga": val_wga, "test_wga": _number(test.get("worst_group_acc")),
               "test_mean_group_acc": _number(test.get("mean_group_acc")),
               "test_overall_acc": _number(test.get("overall_acc")), "path": self.path}
        row["bias_ratio"] = _number((self.config.get("dataset_options") or {}).get("bias_ratio"))
        row["settings"] = json.dumps(self.settings(), sort_keys=True, default=str)
        row.update({f"test_acc[{name}]": acc for name, acc in self.test_group_accuracies().items()})
        row.update({f"test_n[{name}]": n for name, n in self.test_group_sizes().items()})
        return row

    def settings(self) -> dict[str, Any]:
        """What this run computed, as flat keys: its config minus seeds, the paths that depend on the seed
        (synthetic_root, init_checkpoint) and where/how it ran. Runs equal here differ only by seed."""
        if not self.config:  # a run directory without config.json: only what the result says
            return {k: self.get(k) for k in ("dataset", "variant", "method", "stage")}
        return {k: v for k, v in _flatten(self.config).items()
                if k.rsplit(".", 1)[-1] not in _SEED_KEYS and k.split(".", 1)[0] not in _IGNORED}

    def test_group_sizes(self) -> dict[str, int]:
        sizes = ((self.result or {}).get("group_sizes") or {}).get("test") or {}
        names = self.group_names()
        return {names.get(int(g), f"group {g}"): int(n) for g, n in sizes.items()}


def _ignored_settings() -> set[str]:
    from ffr.training.config import INFRA_FIELDS

    return {*INFRA_FIELDS, "run_name", "init_checkpoint", "synthetic_root"}


_SEED_KEYS = {"seed"}  # top-level seed and dataset_options.seed (the split's seed) alike
_IGNORED = _ignored_settings()


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(_flatten(value, name))
        else:
            out[name] = value
    return out


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


def _result_name(names: set[str]) -> str | None:
    """ffr's result file in a folder; the pre-rename ``result.json`` only beside a config.json (a Tune trial
    folder also holds a ``result.json``, of its own format, and no config.json)."""
    if RESULT in names:
        return RESULT
    return LEGACY_RESULT if LEGACY_RESULT in names and CONFIG in names else None


def _read_run(fs, root: str, directory: str, names: set[str]) -> RunRecord:
    where = _uri(root, directory)
    result_name = _result_name(names)
    result = _read_json(fs, f"{directory}/{result_name}", f"{where}/{result_name}") if result_name else None
    config = _read_json(fs, f"{directory}/{CONFIG}", f"{where}/{CONFIG}") if CONFIG in names else {}
    metrics = _read_metrics(fs, f"{directory}/{METRICS}", f"{where}/{METRICS}") if METRICS in names else []
    stopped = _read_json(fs, f"{directory}/{STOPPED}", f"{where}/{STOPPED}") if STOPPED in names else None
    return RunRecord(where, result, config, metrics, stopped)


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
        if name in (RESULT, LEGACY_RESULT, METRICS, CONFIG, STOPPED) and \
                not re.search(r"/checkpoint_[^/]*(/|$)", directory + "/"):
            by_dir.setdefault(directory, set()).add(name)
    return [_read_run(fs, root, directory, names) for directory, names in sorted(by_dir.items())
            if _result_name(names) or METRICS in names]


def read_run(directory: str) -> RunRecord:
    """One run directory (local or s3://)."""
    fs, inner = filesystem(directory)
    names = {str(p).rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(inner, detail=False)} if fs.isdir(inner) else set()
    return _read_run(fs, directory, inner.rstrip("/"), names)


def run_plots(directory: str) -> dict[str, bytes]:
    """The plots of one run (validation WGA per epoch, test accuracy per group), as PNG bytes by file name;
    logged as the run's MLflow artifacts."""
    record = read_run(directory)
    dataset = str(record.get("dataset", "?"))
    plots = {"val_wga_curve.png": plot_val_curves([record], dataset),
             "test_group_acc.png": plot_test_groups([record], dataset)}
    return {name: image for name, image in plots.items() if image is not None}


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
    number = _number(value)
    return "bias –" if number is None else f"bias {number:g}"


def mean_std_cell(mean: Any, std: Any, n: int) -> str:
    """'55.0 ± 7.1 (n=2)'; one seed has no spread to show: '60.0 (n=1)'."""
    mean, std = _number(mean), _number(std)
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
        biases = sorted(part["bias_ratio"].unique(), key=lambda b: (_number(b) is None, _number(b) or 0))
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
                cells.append(_pct(r[c]) + ("" if shared[c] or _number(n) is None or _number(r[c]) is None
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


def render_text(table: pd.DataFrame) -> str:
    parts = [f"dataset: {dataset}  {PAPER_NOTE}\n{text_table(headers, rows)}"
             for dataset, headers, rows in paper_tables(table)]
    for dataset, headers, rows in _dataset_sections(table):
        parts.append(f"dataset: {dataset}  runs (accuracies in %, test groups by name, n = test images)\n"
                     f"{text_table(headers, rows)}")
    summary = summary_table(table)
    if not summary.empty:
        parts.append("every setting: mean ± std over seeds (finished runs)\n" + text_table(*_summary_rows(summary)))
    return "\n\n".join(parts)


def render_markdown(table: pd.DataFrame, paths: list[str], plots: dict[str, list[str]]) -> str:
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


def plot_test_wga(table: pd.DataFrame, dataset: str) -> bytes | None:
    """Test WGA by variant (x) and method (bars), error bars = sample std over seeds; one panel per bias ratio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summary_table(table)
    summary = summary[summary["dataset"].astype(str) == dataset].reset_index(drop=True)
    if summary.empty:
        return None
    stage1 = [r.variant == "ffr" and r.stage == 1 for r in summary.itertuples()]
    summary["x"] = [STAGE1_LABEL if s1 else VARIANT_LABELS.get(r.variant, r.variant)
                    for s1, r in zip(stage1, summary.itertuples())]
    summary["bar"] = [("erm" if s1 else str(method)) + (f" [{extra}]" if extra else "")
                      for s1, method, (_, extra) in zip(stage1, summary["method"], _row_parts(summary))]
    biases = sorted(summary["bias_ratio"].unique(), key=lambda b: (_number(b) is None, _number(b) or 0))
    xs = [x for x in [*VARIANT_LABELS.values(), STAGE1_LABEL] if x in set(summary["x"])]
    xs += sorted(set(summary["x"]) - set(xs))
    bars = sorted(summary["bar"].unique(), key=lambda m: (m != "erm", m))
    fig, axes = plt.subplots(1, len(biases), figsize=(max(5.0, 1.4 * len(xs)) * len(biases), 4), squeeze=False)
    width = 0.8 / len(bars)
    for ax, bias in zip(axes[0], biases):
        part = summary[summary["bias_ratio"].apply(lambda b, bias=bias: _number(b) == _number(bias))]
        for j, bar in enumerate(bars):
            rows = [part[(part["x"] == x) & (part["bar"] == bar)] for x in xs]
            means = [100 * r["test_wga_mean"].iloc[0] if len(r) and _number(r["test_wga_mean"].iloc[0]) is not None
                     else np.nan for r in rows]
            stds = [100 * r["test_wga_std"].iloc[0] if len(r) and _number(r["test_wga_std"].iloc[0]) is not None
                    else np.nan for r in rows]
            ax.bar(np.arange(len(xs)) - 0.4 + width * (j + 0.5), means, width, yerr=stds, capsize=3, label=bar)
        ax.set_xticks(np.arange(len(xs)), xs, rotation=20, ha="right")
        ax.set(ylabel="test worst-group accuracy (%)", ylim=(0, 100), title=f"{dataset}, {_bias_label(bias)}")
        ax.grid(axis="y", alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _png(fig)


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
