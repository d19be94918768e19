"""What a config will cost before anything starts: images and runs counted, GPU-hours and bytes estimated.

``ffr generate --dry-run``, ``ffr train --dry-run`` and ``ffr sweep --dry-run`` print a :class:`CostEstimate`;
``pipelines.cost.estimate_generation(config)`` and ``ffr.training.cost.estimate_training(configs)`` build them (one
call for any list of training configs: a sweep or a paper grid; runs they share, such as FFR's stage 1, count
once). Nothing is started or written, and no data is read where published counts exist.

Rates come from ONE data file, ``ffr/throughput.yaml``: one entry per model × GPU type, each with its source —
measured here (and how), a published figure (and where), or a guess. ``--throughput FILE`` overrides any part of
it (:meth:`Throughput.load`), ``--gpu`` picks the GPU type. Plain Python: no Ray, no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from ffr.config import load_yaml, read_yaml_mapping
from ffr.errors import FFRError

CPU = "cpu"
MAX_GROUP_LINES = 16  # groups listed one per line; more are summarized


def _merge(base: dict, override: dict) -> dict:
    """``override`` over ``base``, mapping by mapping (a leaf or list replaces)."""
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@dataclass
class Rate:
    """One table entry: the numbers for a model on a GPU type, and where they come from."""

    model: str
    gpu: str
    values: dict[str, float]
    source: str

    def line(self) -> str:
        numbers = ", ".join(f"{k} {v:g}" for k, v in self.values.items())
        return f"{self.model} on {self.gpu}: {numbers} ({self.source})"


class Throughput:
    """The throughput table (shipped ``ffr/throughput.yaml``, optionally overridden by a user file)."""

    def __init__(self, data: dict[str, Any], origin: str = "ffr/throughput.yaml") -> None:
        self.data, self.origin = data, origin

    @classmethod
    def load(cls, override: str | None = None) -> "Throughput":
        shipped = load_yaml(resources.files("ffr").joinpath("throughput.yaml").read_text())
        if override is None:
            return cls(shipped)
        return cls(_merge(shipped, read_yaml_mapping(override, "throughput file")),
                   f"ffr/throughput.yaml overridden by {override}")

    def gpu(self, name: str | None) -> str:
        """The table's name of GPU type ``name`` (case-insensitive, aliases allowed); None: the default."""
        gpus = self.data.get("gpus") or {}
        if name is None:
            return str(self.data.get("default_gpu", CPU))
        for canonical, entry in gpus.items():
            spellings = [canonical, *((entry or {}).get("aliases") or [])]
            if name.lower() in (s.lower() for s in spellings):
                return canonical
        raise FFRError(f"GPU type {name!r} is not in the throughput table ({self.origin}); expected one of: "
                       f"{', '.join(gpus)} (or add it with --throughput FILE)")

    def _entry(self, section: str, key: str, gpu: str, label: str) -> Rate | None:
        entry = (self.data.get(section) or {}).get(key)
        found = ((entry or {}).get("gpus") or {}).get(gpu)
        if found is None:
            return None
        values = {k: float(v) for k, v in found.items() if k != "source"}
        return Rate(label, gpu, values, str(found.get("source", "no source given")))

    def generation_family(self, model: str) -> tuple[str, dict] | None:
        for family, entry in (self.data.get("generation") or {}).items():
            if model == family or model in (entry.get("models") or []):
                return family, entry
        return None

    def generation(self, model: str, gpu: str) -> tuple[Rate, dict] | None:
        """(the rate, the family's settings: pixels, extra_steps_per_image) of ``model`` on ``gpu``."""
        found = self.generation_family(model)
        if found is None:
            return None
        rate = self._entry("generation", found[0], gpu, model)
        return None if rate is None else (rate, found[1])

    def training(self, backbone: str, gpu: str) -> tuple[Rate, dict] | None:
        entry = (self.data.get("training") or {}).get(backbone)
        rate = self._entry("training", backbone, gpu, backbone)
        return None if rate is None else (rate, entry)

    @property
    def loader(self) -> dict[str, Any]:
        return self.data.get("loader") or {}

    def storage(self, key: str, default: float = 0.0) -> float:
        value = (self.data.get("storage") or {}).get(key, default)
        return float(value["bytes"] if isinstance(value, dict) else value)

    def image_bytes(self, image_format: str, pixels: int) -> tuple[int, str]:
        """Stored bytes of one image (``image_format`` at ``pixels``), and the entry's source."""
        entry = ((self.data.get("storage") or {}).get("image_bytes_512") or {}).get(image_format)
        if entry is None:
            raise FFRError(f"the throughput table has no storage.image_bytes_512.{image_format}")
        return int(float(entry["bytes"]) * pixels / 512**2), str(entry.get("source", ""))


@dataclass
class RunEstimate:
    """One training run (or a generation job): what it trains on and what it costs."""

    name: str
    what: str  # e.g. "stage 1: erm on synthetic"
    groups: dict[str, int]  # training images per group
    epochs: int
    draws_per_epoch: int
    eval_images: int  # evaluation passes over all epochs and at the end
    gpus: int
    gpu_hours: float | None
    storage_bytes: int
    bound: str = ""  # what limits the rate ("GPU" or "data loading (...)")


@dataclass
class CostEstimate:
    """A dry run's answer: per-group counts, runs and epochs, GPU-hours and storage bytes, with the table entries
    used. ``gpu_hours`` is None when an entry is missing (the line says which one)."""

    title: str
    gpu: str
    groups: dict[str, int] = field(default_factory=dict)  # generation: accepted images per group
    runs: list[RunEstimate] = field(default_factory=list)
    gpu_hours: float | None = 0.0
    wall_hours: float | None = None
    storage_bytes: int = 0
    sources: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def n_runs(self) -> int:
        return len(self.runs)

    @property
    def epochs(self) -> int:
        return sum(r.epochs for r in self.runs)

    @property
    def images(self) -> int:
        return sum(self.groups.values())

    @staticmethod
    def combine(title: str, estimates: list["CostEstimate"]) -> "CostEstimate":
        """Several estimates as one (e.g. a study: generation outputs plus training runs); runs of the same name
        count once."""
        out = CostEstimate(title, estimates[0].gpu if estimates else CPU)
        seen: set[str] = set()
        for est in estimates:
            for name, n in est.groups.items():
                out.groups[name] = out.groups.get(name, 0) + n
            new = [r for r in est.runs if r.name not in seen]
            seen.update(r.name for r in new)
            out.runs += new
            out.storage_bytes += est.storage_bytes if not est.runs else sum(r.storage_bytes for r in new)
            out.sources += [s for s in est.sources if s not in out.sources]
            out.notes += [n for n in est.notes if n not in out.notes]
            if out.gpu_hours is not None:
                if est.gpu_hours is None:
                    out.gpu_hours = None
                elif est.runs:
                    out.gpu_hours += sum(r.gpu_hours or 0.0 for r in new)
                else:
                    out.gpu_hours += est.gpu_hours
        return out

    def lines(self) -> list[str]:
        """The printed preview, one fact a line."""
        unit = "CPU-hours" if self.gpu == CPU else "GPU-hours"
        out = [self.title]
        if self.groups:
            out.append(f"images per group ({len(self.groups)} groups, {self.images:,} in total):")
            out += _group_lines(self.groups)
        if self.runs:
            out.append(f"training runs: {self.n_runs}, {self.epochs:,} epochs in total")
            # the training sets, each listed once (a sweep's runs share a few), numbered in order of appearance
            sets: list[dict[str, int]] = []
            for run in self.runs:
                if run.groups not in sets:
                    sets.append(run.groups)
            inline = len(self.runs) <= 4 or len(sets) == len(self.runs)
            for i, run in enumerate(self.runs, 1):
                cost = "?" if run.gpu_hours is None else f"{format_hours(run.gpu_hours)} {unit}"
                data = "" if inline else f" [set {sets.index(run.groups) + 1}]"
                out.append(f"  run {i}: {run.name}  {run.what}{data}, {run.epochs} epochs × {run.draws_per_epoch:,} "
                           f"images on {run.gpus} {'CPU worker' if self.gpu == CPU else 'GPU'}"
                           f"{'s' if run.gpus > 1 else ''} ({cost}{'; ' + run.bound if run.bound else ''})")
                if inline:
                    out += ["    " + line.strip() for line in _group_lines(run.groups, width=112)]
            if not inline:
                for k, groups in enumerate(sets, 1):
                    out.append(f"  training set {k}: {sum(groups.values()):,} images per epoch")
                    out += ["    " + line.strip() for line in _group_lines(groups, width=112)]
        if self.gpu_hours is None:
            cost = f"{unit} unknown (a throughput entry is missing: see below)"
        else:
            wall = "" if self.wall_hours is None else f" (about {format_hours(self.wall_hours)} h wall)"
            cost = f"{format_hours(self.gpu_hours)} {unit}{wall}"
        out.append(f"estimate on {self.gpu}: {cost}; storage {format_bytes(self.storage_bytes)}")
        out += [f"  rate: {s}" for s in self.sources]
        out += [f"  note: {n}" for n in self.notes]
        return out

    def render(self) -> str:
        return "\n".join(self.lines())

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {**asdict(self), "n_runs": self.n_runs, "epochs": self.epochs, "images": self.images}


def _group_lines(groups: dict[str, int], width: int = 0) -> list[str]:
    """One group a line (``width`` 0), or as many cells as fit in ``width`` characters."""
    items = list(groups.items())
    if len(items) > MAX_GROUP_LINES:
        values = [n for _, n in items]
        return [f"  {len(items)} groups: {min(values):,} to {max(values):,} each"]
    if not items:
        return []
    name_width = max(len(name) for name, _ in items)
    cells = [f"{name:<{name_width}} {n:>7,}" for name, n in items]
    per_line = max(1, (width + 3) // (len(cells[0]) + 3)) if width else 1
    return ["  " + "   ".join(cells[i:i + per_line]) for i in range(0, len(cells), per_line)]


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} TB"


def hours(seconds: float) -> float:
    return seconds / 3600.0


def format_hours(h: float) -> str:
    return f"{h:,.1f}" if h >= 10 else f"{h:,.2f}"


def add_dry_run_arguments(parser: Any, what: str) -> None:
    """``--dry-run``, ``--gpu`` and ``--throughput``: the cost preview flags of generate, train and sweep."""
    parser.add_argument("--dry-run", action="store_true",
                        help=f"print {what}, estimated GPU-hours and storage bytes, then exit; nothing is started, "
                             "written or (where published counts exist) read")
    parser.add_argument("--gpu", metavar="TYPE", default=None,
                        help="GPU type the estimate is for (a name in ffr/throughput.yaml, e.g. A100-80GB, H100, L4)")
    parser.add_argument("--throughput", metavar="FILE", default=None,
                        help="your throughput table (the layout of ffr/throughput.yaml); its entries replace the "
                             "shipped ones")


def loader_rate(table: Throughput, pixels: int, workers: int, corrupt: bool = False) -> tuple[float, str]:
    """Images per second one training worker's DataLoader decodes and resizes (``workers`` processes; 0 = in
    the training process itself, counted as one), and how it was derived."""
    loader = table.loader
    megapixels = pixels / 1e6
    ms = float(loader.get("decode_ms", 0.0)) + float(loader.get("decode_ms_per_megapixel", 0.0)) * megapixels
    if corrupt:
        ms += float(loader.get("corruption_ms_per_megapixel", 0.0)) * megapixels
    procs = max(1, int(workers))
    rate = procs * 1000.0 / ms if ms > 0 else math.inf
    what = (f"data loading: {procs} loader process{'es' if procs > 1 else ''} × {1000.0 / ms:,.0f} img/s at "
            f"{megapixels:.2f} MP per image{' with the corruption' if corrupt else ''}")
    return rate, what
