"""D3S's spurious-correlation experiment on frozen features (``test_disentanglement_correlated.py``).

Each model is frozen; a fresh linear head (super-class, e.g. ImageNet-9) is trained on its features of the
*correlated* training view (every super-class on its one assigned background), selected on the correlated view
of held-out images, then tested on the correlated *and* the anti-correlated held-out views (every other
background). The baseline reads all features of a plainly trained (ERM) model; the disentangled model's head
reads its fg features only — D3S's comparison. Accuracy and worst-group accuracy are over (super-class,
background) groups, so the anti-correlated WGA is the worst super-class on a background it never trained on.

Held-out images: a second output ``val_data`` (D3S's val set, with a view of the same assignment), or the
share of ``data`` held out by the ``d3s`` reader's rule (a hash of seed and id), so a disentangled model trained
with the same seed and share never saw them. Features are extracted in this process (GPU if there is one),
with each model's own preprocessing; the heads train on the arrays (SGD as D3S: lr 1e-3, momentum 0.9, wd 1e-4,
batch 64). Writes ``results.json``, ``correlation.csv`` and ``correlation.md`` under ``output``.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from ffr import backbones, metrics
from ffr.datasets.d3s_shift import held_out_views
from ffr.datasets.synthetic import ShardImages
from ffr.errors import FFRError
from ffr.methods.probes import ProbeOptions, fit_linear_head
from ffr.options import parse
from ffr.runs import resolve_checkpoint
from ffr.shards import ShardReader
from ffr.storage import ensure_dir, filesystem, join
from ffr.training import loop
from ffr.training.evaluation import load_trained_model

FEATURES = ("all", "fg", "bg")
SETS = ("train", "val", "test")  # correlated / correlated held-out / anti-correlated held-out


@dataclass
class ModelSpec:
    label: str
    path: str  # a run directory or a checkpoint directory
    features: str = "all"

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        """``LABEL=PATH[:all|fg|bg]`` (PATH: an ``ffr train`` run directory or checkpoint, local or s3://)."""
        label, sep, rest = text.partition("=")
        if not sep or not label or not rest:
            raise FFRError(f"--model {text!r}; expected LABEL=PATH[:all|fg|bg], e.g. disentangled=runs/abc:fg")
        path, _, features = rest.rpartition(":")
        if features not in FEATURES or not path:
            path, features = rest, "all"
        return cls(label, path, features)


@dataclass
class CorrelationConfig:
    data: str  # a D3S output with a split view (ffr d3s splits)
    split: str
    models: list[str]
    output: str
    val_data: str | None = None
    held_out_fraction: float = 0.2
    seed: int = 0
    head: dict[str, Any] = field(default_factory=lambda: {"steps": 20000, "eval_every": 1000})
    batch_size: int = 128
    review: str | None = None


def _features(model, spec: ModelSpec, images: ShardImages, keys: list[str], transform,
              batch_size: int, device: torch.device) -> np.ndarray:
    out = []
    with torch.no_grad():
        for start in range(0, len(keys), batch_size):
            x = torch.stack([transform(images(k).convert("RGB")) for k in keys[start:start + batch_size]])
            f = model.features(x.to(device)).float()
            if spec.features != "all":
                if not hasattr(model, "split"):
                    raise FFRError(f"model {spec.label!r} has no fg/bg split (method {type(model).__name__}); "
                                   "expected features 'all' for it")
                f = model.split(f)[0 if spec.features == "fg" else 1]
            out.append(f.cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _scores(predictions: np.ndarray, y: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    return {"acc": metrics.overall_accuracy(predictions, y),
            "wga": metrics.worst_group_accuracy(predictions, y, groups),
            "mean_group_acc": metrics.mean_group_accuracy(predictions, y, groups)}


def run_correlation(cfg: CorrelationConfig) -> dict[str, Any]:
    """Train, select and test one head per model; returns {"rows": [...], "record": split record, ...}."""
    specs = [ModelSpec.parse(m) for m in cfg.models]
    if len({s.label for s in specs}) != len(specs):
        raise FFRError(f"--model labels must be distinct, got {[s.label for s in specs]}")
    head_options = parse(ProbeOptions, cfg.head, "head", "the correlation heads")
    views, record, where = held_out_views(cfg.data, cfg.split, cfg.val_data, cfg.held_out_fraction, cfg.seed,
                                          cfg.review)
    empty = [name for name, view in views.items() if view.empty]
    if empty:
        raise FFRError(f"view {cfg.split!r}: no {', '.join(empty)} images (train = correlated, val = correlated "
                       "held-out, test = anti-correlated held-out); generate more or raise held_out_fraction")
    loaders = {uri: ShardImages.of(ShardReader(uri)) for uri in set(where.values())}
    n_super = len(record["superclasses"])
    bias_names = ShardReader(cfg.data).spec.bias_names
    labels = {name: view["superclass"].to_numpy(np.int64) for name, view in views.items()}
    groups = {name: labels[name] * len(bias_names) + view["b"].to_numpy(np.int64) for name, view in views.items()}
    device = loop.device(torch.cuda.is_available())
    rows = []
    for spec in specs:
        checkpoint = resolve_checkpoint(spec.path, cfg.seed)
        model, config = load_trained_model(checkpoint, device)
        transform = backbones.preprocessing(config["backbone"]).at(int(config.get("image_size", 224))).transform()
        feats = {name: _features(model, spec, loaders[where[name]], view["image_key"].astype(str).tolist(),
                                 transform, cfg.batch_size, device)
                 for name, view in views.items()}

        def select(head, feats=feats):  # D3S selected nothing; here: the best correlated-val WGA, as ffr selects
            return metrics.worst_group_accuracy(head.predict(feats["val"]), labels["val"], groups["val"])

        head = fit_linear_head(feats["train"], labels["train"], n_super, head_options, cfg.seed, select)
        row = {"model": spec.label, "features": spec.features, "feature_dim": int(feats["train"].shape[1]),
               "method": config.get("method"), "checkpoint": checkpoint, "best_step": head.best_step}
        for name, prefix in (("train", "train"), ("val", "correlated_val"), ("test", "anti_correlated_test")):
            for key, value in _scores(head.predict(feats[name]), labels[name], groups[name]).items():
                row[f"{prefix}_{key}"] = value
        rows.append(row)
    result = {"rows": rows, "split": record, "sizes": {name: int(len(v)) for name, v in views.items()},
              "held_out": cfg.val_data or f"{cfg.held_out_fraction} of {cfg.data} (seed {cfg.seed})",
              "head": head_options.to_dict()}
    _write(cfg.output, result)
    return result


TABLE_COLUMNS = (("correlated_val_acc", "corr. val acc"), ("correlated_val_wga", "corr. val WGA"),
                 ("anti_correlated_test_acc", "anti-corr. acc"), ("anti_correlated_test_wga", "anti-corr. WGA"))


def table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    headers = ["model", "features", *(name for _, name in TABLE_COLUMNS)]
    body = [[r["model"], r["features"], *(f"{100 * r[key]:.1f}" for key, _ in TABLE_COLUMNS)] for r in rows]
    return headers, body


def markdown(result: dict) -> str:
    headers, body = table(result["rows"])
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    sizes = result["sizes"]
    assigned = ", ".join(f"{k}→{v}" for k, v in result["split"]["assigned_background"].items())
    return ("\n".join(lines) + f"\n\nAccuracy and worst-group accuracy (%) over (super-class, background) groups; "
            f"heads trained on the correlated view ({sizes['train']} images), selected on correlated held-out "
            f"({sizes['val']}), tested on correlated held-out and anti-correlated held-out ({sizes['test']}). "
            f"Assignment: {assigned}.\n")


def _write(output: str, result: dict) -> None:
    fs, base = filesystem(output)
    ensure_dir(fs, base)
    files = {"results.json": json.dumps(result, indent=2, default=str).encode(),
             "correlation.md": markdown(result).encode()}
    buffer = io.StringIO()
    pd.DataFrame(result["rows"]).to_csv(buffer, index=False)
    files["correlation.csv"] = buffer.getvalue().encode()
    for name, data in files.items():
        with fs.open(join(base, name), "wb") as f:
            f.write(data)
