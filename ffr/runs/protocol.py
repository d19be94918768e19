"""Model-selection protocols over finished runs: which hyperparameters a paper table reports.

A *cell* is one (dataset, variant, method, stage, bias ratio, generator): the generator that made a run's
synthetic images is an axis of the study, never a hyperparameter to select over. Runs of a cell that differ in
anything else but the seed (learning rate, weight decay, a method's hyperparameter, a stage-1 setting, ...) are
different *settings*; runs of one setting are its seeds (:meth:`ffr.runs.RunRecord.settings`). A protocol picks
one setting per cell and reports that setting's test numbers over its seeds:

- ``val-wga`` (FFR's rule, as SubpopBench's and DomainBed's): the best mean validation worst-group accuracy
  over seeds — the paper-table default;
- ``val-worst-class``: the best mean validation worst-*class* accuracy, for validation sets without group
  labels (SubpopBench's "attributes unknown"). Each run's epoch was still chosen by training's own rule
  (validation WGA): only the hyperparameters are selected without group labels;
- ``oracle``: the best mean *test* WGA; an upper bound, not a protocol, and labelled so wherever it is printed;
- ``none``: no selection, every setting is its own row.

Ties go to the setting with more seeds, then to the first in a fixed order, so a table is reproducible.
The test columns are the ones group-robustness papers print (SubpopBench, WILDS): worst-group accuracy,
average accuracy, average accuracy weighted by the training group proportions (the Waterbirds convention) and
mean-group (balanced) accuracy, each as mean, sample std and standard error over seeds.
"""

from __future__ import annotations

import json
import math
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ffr.errors import FFRError
from ffr.runs import RunRecord, number

SELECTIONS = ("val-wga", "val-worst-class", "oracle", "none")
DEFAULT_SELECTION = "val-wga"
SELECTION_TEXT = {
    "val-wga": "per cell, the setting with the best mean validation worst-group accuracy over seeds (FFR's rule)",
    "val-worst-class": "per cell, the setting with the best mean validation worst-class accuracy over seeds (no "
                       "group labels on validation; each run's epoch was still chosen by validation WGA)",
    "oracle": "ORACLE: per cell, the setting with the best mean TEST worst-group accuracy; an upper bound that "
              "selects on test, not a valid protocol",
    "none": "no selection: every setting is its own row",
}
# (result key, column label): the test numbers of every cell
TEST_METRICS = (("worst_group_acc", "WGA"), ("overall_acc", "avg acc"),
                ("train_weighted_acc", "train-weighted avg acc"), ("mean_group_acc", "mean-group acc"))
CELL_AXES = ("dataset", "variant", "method", "stage", "dataset_options.bias_ratio", "generator")


@dataclass(frozen=True)
class Stat:
    """Mean, sample std (ddof 1) and standard error (std / √n) over seeds; no spread for one seed."""

    mean: float | None
    std: float | None
    se: float | None
    n: int

    @classmethod
    def of(cls, values: list[float | None]) -> "Stat":
        a = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
        if not len(a):
            return cls(None, None, None, 0)
        std = float(a.std(ddof=1)) if len(a) > 1 else None
        return cls(float(a.mean()), std, None if std is None else std / math.sqrt(len(a)), len(a))


def val_worst_class_acc(record: RunRecord) -> float | None:
    """Validation worst-class accuracy of the tested checkpoint: the result's own, or (runs written before it
    was recorded) from the validation group accuracies weighted by the validation group sizes."""
    val = (record.result or {}).get("val") or {}
    if number(val.get("worst_class_acc")) is not None:
        return number(val["worst_class_acc"])
    sizes = ((record.result or {}).get("group_sizes") or {}).get("val") or {}
    names = record.group_names()
    correct: dict[str, float] = defaultdict(float)
    total: dict[str, int] = defaultdict(int)
    for g, n in sizes.items():
        acc = number(val.get(f"acc_group_{g}"))
        if acc is None or int(g) not in names:
            return None
        label = names[int(g)].rsplit("/", 1)[0]  # "class/bias" → class
        correct[label] += acc * int(n)
        total[label] += int(n)
    return min(correct[c] / total[c] for c in total) if total else None


def score(record: RunRecord, selection: str) -> float | None:
    """What ``selection`` ranks a run by."""
    result = record.result or {}
    if selection == "val-wga":
        value = number(result.get("best_val_worst_group_acc"))
        return value if value is not None else number((result.get("val") or {}).get("worst_group_acc"))
    if selection == "val-worst-class":
        return val_worst_class_acc(record)
    if selection == "oracle":
        return number((result.get("test") or {}).get("worst_group_acc"))
    raise FFRError(f"--select {selection!r} ranks nothing; expected one of {', '.join(SELECTIONS[:-1])}")


def _flat(record: RunRecord) -> dict[str, Any]:
    return record.settings()


def cell_of(record: RunRecord) -> tuple:
    settings = _flat(record)
    bias = number(settings.get("dataset_options.bias_ratio"))
    stage = record.get("stage")
    generator = settings.get("generator")
    return (str(record.get("dataset", "?")), str(record.get("variant", "?")), record.method_label,
            int(stage) if isinstance(stage, (int, float)) else 0, bias, None if generator is None else str(generator))


@dataclass
class Cell:
    """One row of a protocol table: a cell's chosen setting and its seeds' test numbers."""

    dataset: str
    variant: str
    method: str
    stage: int
    bias_ratio: float | None
    generator: str | None  # the synthetic images' generator label (None: real only, or not recorded)
    selection: str
    records: list[RunRecord]  # the chosen setting's seeds
    chosen: dict[str, Any]  # the hyperparameters that told this cell's settings apart, at the chosen values
    compared: int  # settings compared in this cell
    score: Stat | None  # the selection score of the chosen setting, over its seeds
    test: dict[str, Stat] = field(default_factory=dict)
    several_generators: bool = False  # its dataset's runs come from more than one generator: rows name theirs

    @property
    def seeds(self) -> list[int]:
        return sorted(int(r.get("seed")) for r in self.records if isinstance(r.get("seed"), (int, float)))

    @property
    def n(self) -> int:
        return len(self.records)

    @property
    def stage1_only(self) -> bool:
        return self.variant == "ffr" and self.stage == 1


def one_per_seed(records: list[RunRecord]) -> list[RunRecord]:
    """The runs of one setting, one per seed. Two runs of one setting and seed are one computation under two
    names (e.g. a run named before run names came from resolved options, and its rerun): the first by path
    counts, with a warning naming both, so n stays the number of seeds. (``synthetic_root`` is not a setting —
    it follows the seed in the demo — so runs on synthetic sets generated differently also meet here; the warning
    says so. ``ffr study`` tables each ``datasets`` entry apart.)"""
    kept: dict[Any, RunRecord] = {}
    for record in sorted(records, key=lambda r: r.path):
        seed = record.get("seed")
        if seed in kept:
            warnings.warn(f"runs {kept[seed].path!r} and {record.path!r} are one setting with one seed ({seed}); "
                          "counting the first once (a rerun under a new name; runs that differ only in their "
                          "synthetic_root, e.g. another generator setting, belong in separate report folders)",
                          stacklevel=3)
            continue
        kept[seed] = record
    return list(kept.values())


def _choose(settings: dict[str, list[RunRecord]], selection: str) -> tuple[str, Stat]:
    ranked = []
    for key, members in settings.items():
        stat = Stat.of([score(r, selection) for r in members])
        ranked.append(((-1.0 if stat.mean is None else stat.mean), len(members), key, stat))
    best = min(ranked, key=lambda t: (-t[0], -t[1], t[2]))  # best score, then more seeds, then a fixed order
    return best[2], best[3]


def _varying(settings: dict[str, list[RunRecord]]) -> list[str]:
    parsed = [json.loads(k) for k in settings]
    keys = {k for p in parsed for k in p} - set(CELL_AXES)
    return sorted(k for k in keys if len({json.dumps(p.get(k), sort_keys=True, default=str) for p in parsed}) > 1)


def select(records: list[RunRecord], selection: str = DEFAULT_SELECTION) -> list[Cell]:
    """The protocol table's rows (see the module docstring); finished runs only, in cell order."""
    if selection not in SELECTIONS:
        raise FFRError(f"--select {selection!r} is unknown; expected one of {', '.join(SELECTIONS)}")
    cells: dict[tuple, dict[str, list[RunRecord]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        if record.finished:
            cells[cell_of(record)][record.setting_key()].append(record)
    for settings in cells.values():
        for key, members in settings.items():
            settings[key] = one_per_seed(members)
    # Without selection every setting is a row, labelled by the keys that vary in any cell of its dataset (so
    # one row of the paper table is one setting across bias ratios); a selection shows what its cell compared.
    per_dataset: dict[str, set[str]] = defaultdict(set)
    for key, settings in cells.items():
        per_dataset[key[0]].update(_varying(settings))
    out = []
    for key in sorted(cells, key=lambda k: tuple((v is None, v if v is not None else "") for v in k)):
        settings = cells[key]
        if selection == "none":
            varying = sorted(per_dataset[key[0]])
            picks = [(k, None) for k in sorted(settings)]
        else:
            varying = _varying(settings)
            picks = [_choose(settings, selection)]
        for chosen_key, stat in picks:
            members = sorted(settings[chosen_key], key=lambda r: (str(r.get("seed")), r.path))
            values = json.loads(chosen_key)
            cell = Cell(*key, selection=selection, records=members,
                        chosen={k: values[k] for k in varying if k in values}, compared=len(settings), score=stat)
            for metric, _ in TEST_METRICS:
                cell.test[metric] = Stat.of([number(((r.result or {}).get("test") or {}).get(metric))
                                             for r in members])
            out.append(cell)
    generators: dict[str, set[str]] = defaultdict(set)
    for cell in out:
        if cell.generator is not None:
            generators[cell.dataset].add(cell.generator)
    for cell in out:
        cell.several_generators = len(generators[cell.dataset]) > 1
    return out


def chosen_text(chosen: dict[str, Any]) -> str:
    """'lr=0.001, weight_decay=1e-05' (method hyperparameters without their prefix)."""
    def short(value: Any) -> str:
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    return ", ".join(f"{k.removeprefix('method_hparams.')}={short(v)}" for k, v in sorted(chosen.items()))
