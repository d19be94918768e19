"""Plots of run directories: validation WGA per epoch and test accuracy per group, as PNG bytes.

Training logs one run's plots (with its files) as MLflow artifacts (:func:`run_artifacts`); ``ffr report``
draws the same plots over many runs. matplotlib is imported only when a plot is drawn.
"""

from __future__ import annotations

import io

import numpy as np

from ffr.runs import CONFIG, METRICS, RESULT, RunRecord, read_run
from ffr.storage import filesystem, join

TRACKED_FILES = (CONFIG, METRICS, RESULT)  # a run's files that go to its MLflow run as artifacts


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display on workers and CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    return buf.getvalue()


def _labels(records: list[RunRecord]) -> list[str]:
    """Short legend labels; the run name is added where two runs would read the same."""
    short = [f"{r.get('variant', '?')}/{r.method_label} s{r.get('seed', '?')} st{r.get('stage', '?')}"
             for r in records]
    return [s if short.count(s) == 1 else f"{s} ({r.name})" for s, r in zip(short, records)]


def plot_val_curves(records: list[RunRecord], dataset: str) -> bytes | None:
    """Validation WGA per epoch, one line per run, the best epoch marked."""
    import matplotlib.ticker

    plt = pyplot()
    runs = [r for r in records if r.val_curve()[0]]
    if not runs:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for record, label in zip(runs, _labels(runs)):
        epochs, values = record.val_curve()
        (line,) = ax.plot(epochs, [100 * v for v in values], marker=".", label=label)
        best, _ = record.best()
        if best in epochs:
            ax.plot([best], [100 * values[epochs.index(best)]], "o", color=line.get_color(), markersize=8,
                    fillstyle="none")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel="val worst-group accuracy (%)", title=f"{dataset}: validation WGA per epoch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return figure_png(fig)


def plot_test_groups(records: list[RunRecord], dataset: str) -> bytes | None:
    """Test accuracy per group, one bar per run in each group."""
    plt = pyplot()
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
    return figure_png(fig)


def run_plots(directory: str) -> dict[str, bytes]:
    """The plots of one run (validation WGA per epoch, test accuracy per group), as PNG bytes by file name."""
    record = read_run(directory)
    dataset = str(record.get("dataset", "?"))
    plots = {"val_wga_curve.png": plot_val_curves([record], dataset),
             "test_group_acc.png": plot_test_groups([record], dataset)}
    return {name: image for name, image in plots.items() if image is not None}


def run_artifacts(directory: str) -> dict[str, bytes]:
    """What a finished run logs to MLflow: its config, metrics and result files, and its plots."""
    fs, inner = filesystem(directory)
    files = {name: fs.cat_file(join(inner, name)) for name in TRACKED_FILES if fs.exists(join(inner, name))}
    return {**files, **run_plots(directory)}
