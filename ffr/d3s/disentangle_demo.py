"""The embedded disentanglement study: D3S's fg/bg split, its four probes and its spurious-correlation test,
offline on CPU, through the same code a full-scale run uses (``ffr d3s disentangle-demo``, ``make
d3s-disentangle-demo``).

The world (``ffr.d3s.embedded``): printed digits are the objects. Plain-background digits in an ImageNet-layout
folder play ImageNet (the class-only real stream, read by the ``class-folder`` reader); the ``compositing``
backend puts digits into 10 procedural backgrounds and plays Stable Diffusion, giving a D3S train output and a
separate D3S val output (as D3S's val set was its own run). Then:

1. the "ImageNet-pretrained" model: a small CNN trained by ``ffr train`` (ERM) on the plain digits; every run
   below starts from it, and the disentangled model's fg head from its classifier, as D3S starts from
   ResNet-50's IMAGENET1K weights and fc;
2. per seed, three ``ffr train`` runs on mixed batches (D3S images with class and background, plus plain digits
   with class only), step-based: plain ERM (as many model updates as a disentangle run); ``disentangle``
   (D3S's penalty, weighted 10: see disentangle_hparams); ``disentangle`` with ``penalty_weight: 0`` (the same
   schedule and heads without the penalty);
3. the four probes of both disentangle runs, with chance levels (mean ± std over seeds);
4. D3S's spurious-correlation experiment: digits 0-8 are 9 "super-classes" on D3S's own assignment
   ``2,8,4,9,1,6,7,3,0`` (one background unused, as with ImageNet-9); frozen features, linear heads trained on
   the correlated view of D3S-train, selected on correlated D3S-val, tested on correlated and anti-correlated
   D3S-val — ERM features (all: the pretrained model itself, D3S's baseline, and ERM on the same mixed data)
   against disentangled fg features (and those of the no-penalty run).

Writes ``report.md`` and ``study.json`` under ``out``; runs are under ``out/runs`` (MLflow beside them).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ffr.datasets.d3s_splits import D3S_ASSIGNMENT

N_SUPERCLASSES = 9  # digits 0-8; digit 9 plays the ImageNet classes outside ImageNet-9
SPLIT = "digits9-" + "-".join(str(a) for a in D3S_ASSIGNMENT)
PROBES = (("class_from_fg", "class from fg", "model's fg head"),
          ("background_from_bg", "background from bg", "model's bg head"),
          ("class_from_bg", "class from bg", "linear probe (D3S)"),
          ("background_from_fg", "background from fg", "linear probe (D3S)"),
          ("class_from_bg_standardized", "class from bg", "linear probe, z-scored"),
          ("background_from_fg_standardized", "background from fg", "linear probe, z-scored"))


@dataclass
class StudyConfig:
    """Sizes and settings of the embedded study; the defaults are ``make d3s-disentangle-demo``."""

    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    image_size: int = 32
    width: int = 16  # small-cnn width: 64 pooled features
    bg_features: int = 16
    d3s_per_group: int = 20  # D3S-train: 10 digits × 10 backgrounds × this
    d3s_val_per_group: int = 6
    plain_per_class: int = 60  # the "ImageNet" stream
    pretrain_epochs: int = 8
    # One epoch: D3S keeps its final model, and selection by val WGA over 99 groups of a few images each (0 at
    # every epoch here) would keep the first epoch's.
    epochs: int = 1
    steps_per_epoch: int = 1500
    warmup_steps: int = 200
    model_every: int = 20  # D3S: 5 (see disentangle_hparams)
    model_lr: float = 1e-3  # D3S: 5e-3
    penalty_weight: float = 10.0  # D3S: 1 (see disentangle_hparams)
    erm_steps: int = 265  # the ERM run: as many model updates as a disentangle run makes (warm-up + model steps)
    batch_size: int = 32  # D3S images per step; as many plain ones join them (mix)
    method_hparams: dict[str, Any] = field(default_factory=dict)  # over the disentangle settings below
    correlation_steps: int = 3000


def disentangle_hparams(config: StudyConfig, penalty: bool) -> dict[str, Any]:
    """D3S's constants except: the fg/bg sizes (a 64-feature CNN); 20 steps per model step and a model lr of 1e-3
    instead of 5 and 5e-3 (with D3S's, the model outruns its critics within a few model steps on this CPU budget:
    their online estimate drops to about 0 while a freshly trained critic still finds the dependence); a penalty
    weight of 10 instead of 1 (65 model steps here against D3S's 20,000: with 1 the penalty barely moves the
    features in that time); probes of 5,000 steps (D3S: 100,000), plus z-scored ones.
    ``config.method_hparams`` overrides."""
    hparams = {"bg_features": config.bg_features, "warmup_steps": config.warmup_steps,
               "model_every": config.model_every, "model_lr": config.model_lr,
               "penalty_weight": config.penalty_weight,
               "probe": {"steps": 5000}, "probe_standardized": True, **config.method_hparams}
    if not penalty:
        hparams["penalty_weight"] = 0.0
    return hparams


def prepare(out: Path, config: StudyConfig) -> dict[str, str]:
    """The folders and outputs the runs read (made once; a rerun reuses them)."""
    import pipelines
    from ffr.d3s.embedded import generation_config, write_foregrounds, write_plain_set
    from ffr.datasets.d3s_splits import read_view, write_splits

    size = config.image_size
    paths = {"plain_train": str(out / "plain" / "train"), "plain_val": str(out / "plain" / "val"),
             "d3s_train": str(out / "d3s-train"), "d3s_val": str(out / "d3s-val"),
             "mapping": str(out / "digits9.json")}
    if not (out / "foregrounds").exists():
        fg = write_foregrounds(out, per_class=8, size=size)
        write_plain_set(out, fg, "train", per_class=config.plain_per_class, size=size)
        write_plain_set(out, fg, "val", per_class=max(10, config.plain_per_class // 4), size=size, seed=1)
    fg = str(out / "foregrounds")
    for key, per_group, seed in (("d3s_train", config.d3s_per_group, 0), ("d3s_val", config.d3s_val_per_group, 1)):
        pipelines.generate(generation_config(paths[key], fg, per_group, templates=3, size=size, runner="local",
                                             seed=seed, shard_size=500))
    Path(paths["mapping"]).write_text(json.dumps({"names": [f"digit{i}" for i in range(N_SUPERCLASSES)],
                                                  "classes": {str(i): i for i in range(N_SUPERCLASSES)}}))
    for key in ("d3s_train", "d3s_val"):
        try:
            read_view(paths[key], SPLIT, "correlated")
        except Exception:  # noqa: BLE001 - not written yet
            write_splits(paths[key], mapping=paths["mapping"], name=SPLIT, assignment=list(D3S_ASSIGNMENT))
    return paths


def _base(config: StudyConfig, runs: str) -> dict[str, Any]:
    return {"backbone": "small-cnn", "backbone_options": {"width": config.width}, "image_size": config.image_size,
            "executor": "local", "storage_path": runs, "cache_in_memory": True, "loader_workers": 0}


def pretrain(paths: dict[str, str], config: StudyConfig, runs: str) -> str:
    """The "ImageNet" model: ERM on plain digits; returns its best checkpoint."""
    from ffr.training import run_experiment

    result = run_experiment({**_base(config, runs), "dataset": "class-folder",
                             "dataset_options": {"root": paths["plain_train"], "val_root": paths["plain_val"]},
                             "method": "erm", "pretrained": None, "optimizer": "adam", "lr": 3e-3,
                             # one step-based epoch of as many batches as pretrain_epochs passes: the final model is
                             # kept (val WGA over 10 classes of ~15 images is noisy enough to keep an untrained one)
                             "weight_decay": 0.0, "epochs": 1, "batch_size": 32,
                             "steps_per_epoch": config.pretrain_epochs * -(-10 * config.plain_per_class // 32),
                             "mlflow": {"experiment_name": "d3s-disentangle-demo"}})
    return result["checkpoint"]


def run_configs(paths: dict[str, str], config: StudyConfig, runs: str, pretrained: str, seed: int
                ) -> dict[str, dict[str, Any]]:
    """The three runs of one seed: erm (as many model updates as a disentangle run), disentangle, disentangle
    without the penalty (D3S's warm-up optimiser: SGD lr 1e-3, momentum 0.9; ERM trains with it throughout)."""
    common = {**_base(config, runs), "dataset": "d3s",
              "dataset_options": {"root": paths["d3s_train"], "val_root": paths["d3s_val"], "seed": 0},
              "mix": {"dataset": "class-folder", "dataset_options": {"root": paths["plain_train"]},
                      "batch_size": config.batch_size},
              "pretrained": pretrained, "seed": seed, "optimizer": "sgd", "lr": 1e-3, "momentum": 0.9,
              "weight_decay": 0.0, "batch_size": config.batch_size, "epochs": config.epochs,
              "steps_per_epoch": config.steps_per_epoch, "mlflow": {"experiment_name": "d3s-disentangle-demo"}}
    return {"erm": {**common, "method": "erm", "epochs": 1, "steps_per_epoch": config.erm_steps},
            "disentangled": {**common, "method": "disentangle",
                             "method_hparams": disentangle_hparams(config, penalty=True)},
            "no penalty": {**common, "method": "disentangle",
                           "method_hparams": disentangle_hparams(config, penalty=False)}}


def _mean_std(values: list[float]) -> str:
    values = [100 * v for v in values if v is not None and np.isfinite(v)]
    if not values:
        return "–"
    spread = f" ± {np.std(values, ddof=1):.1f}" if len(values) > 1 else ""
    return f"{np.mean(values):.1f}{spread}"


def probe_table(results: dict[int, dict[str, dict]]) -> str:
    """Rows = the four probes; columns = with / without the penalty (val, mean ± std over seeds), chance."""
    seeds = sorted(results)
    lines = ["| probe (D3S-val top-1, %) | head | disentangled | no penalty | chance |", "|---|---|---|---|---|"]
    for key, label, head in PROBES:
        if key not in results[seeds[0]]["disentangled"]["probes"]:
            continue
        cells = [_mean_std([results[s][run]["probes"][key]["val"] for s in seeds])
                 for run in ("disentangled", "no penalty")]
        chance = results[seeds[0]]["disentangled"]["probes"][key]["chance"]
        lines.append(f"| {label} | {head} | {cells[0]} | {cells[1]} | {100 * chance:.1f} |")
    return "\n".join(lines) + f"\n\nMean ± sample std over seeds {', '.join(map(str, seeds))} (n={len(seeds)}).\n"


def correlation_table(rows: dict[int, list[dict]]) -> str:
    from ffr.d3s.correlation import TABLE_COLUMNS

    seeds = sorted(rows)
    first = rows[seeds[0]]
    lines = ["| features | " + " | ".join(name for _, name in TABLE_COLUMNS) + " |",
             "|---|" + "---|" * len(TABLE_COLUMNS)]
    for i, row in enumerate(first):
        cells = [_mean_std([rows[s][i][key] for s in seeds]) for key, _ in TABLE_COLUMNS]
        lines.append(f"| {row['model']} ({row['features']}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\nMean ± sample std over seeds {', '.join(map(str, seeds))} (n={len(seeds)}).\n"


def run_study(out: str | Path, seeds: list[int] | None = None, config: StudyConfig | None = None) -> dict[str, Any]:
    """Everything, end to end; returns {"probes", "correlation", "markdown", "seconds"} (also written to
    ``out/report.md`` and ``out/study.json``). Finished runs are reused on a rerun."""
    from ffr.d3s.correlation import CorrelationConfig, run_correlation
    from ffr.training import run_experiment

    config = config or StudyConfig()
    if seeds is not None:
        config.seeds = list(seeds)
    started = time.perf_counter()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    runs = str(out / "runs")
    paths = prepare(out, config)
    prepared = time.perf_counter()
    pretrained = pretrain(paths, config, runs)
    results: dict[int, dict[str, dict]] = {}
    correlation: dict[int, list[dict]] = {}
    for seed in config.seeds:
        results[seed] = {name: run_experiment(cfg) for name, cfg in
                         run_configs(paths, config, runs, pretrained, seed).items()}
        models = [f"ImageNet-pretrained ERM={pretrained}:all",  # D3S's baseline: the pretrained model itself
                  f"ERM={_run_dir(results[seed]['erm'])}:all",
                  f"disentangled={_run_dir(results[seed]['disentangled'])}:fg",
                  f"no penalty={_run_dir(results[seed]['no penalty'])}:fg"]
        correlation[seed] = run_correlation(CorrelationConfig(
            data=paths["d3s_train"], val_data=paths["d3s_val"], split=SPLIT, models=models,
            output=str(out / "correlation" / f"seed{seed}"), seed=seed,
            head={"steps": config.correlation_steps, "eval_every": 250, "lr": 0.01, "standardize": True}))["rows"]
    seconds = time.perf_counter() - started
    markdown = ("## Probes: what each half of the features knows\n\n" + probe_table(results) +
                "\n## Spurious correlation: frozen features, linear heads\n\n" + correlation_table(correlation) +
                f"\nWall time {seconds / 60:.1f} min (data {prepared - started:.0f} s).\n")
    study = {"config": asdict(config), "seconds": seconds,
             "probes": {s: {k: r[k]["probes"] for k in ("disentangled", "no penalty")} for s, r in results.items()},
             "correlation": correlation, "markdown": markdown}
    (out / "report.md").write_text(markdown)
    (out / "study.json").write_text(json.dumps(study, indent=2, default=str))
    return study


def _run_dir(result: dict) -> str:
    return f"{result['storage_path'].rstrip('/')}/{result['run_name']}"
