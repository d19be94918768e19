"""``ffr d3s eval``: per-background evaluation of classifiers on a D3S output, as a Ray Data batch-inference job.

The driver resolves the plan once (which images, where their bytes sit in the shard tars, their true class
index and background), from all accepted images or from a split view, optionally only reviewed ones
(``review: accepted``). Per model, ``map_batches`` runs :class:`ffr.d3s.predict.Predictor` on an actor pool
(``ActorPoolStrategy``, ``num_gpus`` per actor, 0 on CPU); each actor loads its model once. Outputs under
``output``:

    predictions.parquet            id, model, y, background, top5, top5_scores (docs/d3s.md, Outputs)
    per_background.csv             model, background, n, top1, top5   (+ reference_top1, drop_top1 with a reference)
    per_class_background.parquet   model, y, class_name, background, n, top1, top5
    reference.parquet              predictions on the reference folder (ImageNet val layout), when given
    summary.csv / summary.md       one row per model
    heatmaps/{model}.png           top-1 per class × background
    eval_config.json
"""

from __future__ import annotations

import io
import json
import re
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from ffr.d3s import metrics
from ffr.d3s.models import DEFAULT_TEMPLATES
from ffr.errors import FFRError
from ffr.shards import ShardReader
from ffr.storage import filesystem, join, write_atomic
from pipelines.guides import class_folders, list_images
from pipelines.recipes.class_table import load_class_table

BLOCK_BATCHES = 4  # batches per Ray Data block (4 and 16 measured the same at 120K rows)


@dataclass
class EvalConfig:
    data: str  # a generation output root
    models: list[str] = field(default_factory=list)  # specs, see ffr.d3s.models
    output: str = ""
    split: str | None = None  # 'NAME/correlated' or 'NAME/anti-correlated' (a view under data/splits/)
    reference: str | None = None  # an ImageNet-val-layout folder: reference accuracy and the drop
    class_table: str = "imagenet"
    review: str | None = None  # 'accepted': only images accepted in review (ffr.review export)
    batch_size: int = 64
    min_actors: int = 1
    max_actors: int = 1
    num_gpus_per_actor: float = 0.0
    num_cpus_per_actor: float = 1.0
    local: bool = False  # run the same Predictor in this process, without Ray
    verbose: bool = False  # Ray Data's execution banners and progress bars (off: ffr prints its own tables)
    limit: int | None = None  # first N plan rows (smoke runs)
    # CLIP zero-shot prompts, one text embedding per class averaged over them; {class} = the class table's name
    clip_templates: list[str] = field(default_factory=lambda: list(DEFAULT_TEMPLATES))


def shard_plan(cfg: EvalConfig) -> pd.DataFrame:
    """id, y, background, path, offset, size — one row per image to evaluate, ordered by tar position."""
    reader = ShardReader(cfg.data)
    meta = reader.metadata
    if cfg.split:
        from ffr.datasets.d3s_splits import read_view

        name, _, which = cfg.split.partition("/")
        view, _ = read_view(cfg.data, name, which or "anti-correlated")
        meta = meta[meta["id"].isin(set(view["id"]))]
    if cfg.review == "accepted":
        from ffr.datasets.reviewed import accepted_ids

        meta = meta[meta["id"].astype(str).isin(accepted_ids(cfg.data))]
    elif cfg.review is not None:
        raise FFRError(f"review = {cfg.review!r}; expected 'accepted' or null")
    if meta.empty:
        raise FFRError(f"nothing to evaluate under {cfg.data!r} (split {cfg.split!r}, review {cfg.review!r})")
    members = [reader.member(k) for k in meta["image_key"]]
    y = meta["class_index"] if "class_index" in meta.columns else meta["y"]
    plan = pd.DataFrame({"id": meta["id"].astype(str).to_numpy(), "y": y.astype(np.int64).to_numpy(),
                         "background": meta["bias_name"].astype(str).to_numpy(),
                         "path": [m.path for m in members],
                         "offset": np.array([m.offset for m in members], np.int64),
                         "size": np.array([m.size for m in members], np.int64)})
    plan = plan.sort_values(["path", "offset"], kind="stable").reset_index(drop=True)
    return plan.iloc[:cfg.limit] if cfg.limit else plan


def reference_plan(folder: str, class_table: str) -> pd.DataFrame:
    """An ImageNet-val-layout folder (``val/{wnid}/*.JPEG``) as plan rows (whole files, background 'reference')."""
    table = load_class_table(class_table)
    rows = []
    for c, path in sorted(class_folders(folder, table.wnids).items()):
        rows += [{"id": f"ref-{c}-{i}", "y": c, "background": "reference", "path": f, "offset": -1, "size": -1}
                 for i, f in enumerate(list_images(path, f"reference (class {c})"))]
    return pd.DataFrame(rows)


def _head(cfg: EvalConfig) -> dict:
    """What a zero-shot classifier builds its head from: the class table's names (read here, on the driver, so
    actors need no access to a local table file) and the prompt templates."""
    return {"class_names": load_class_table(cfg.class_table).names, "templates": tuple(cfg.clip_templates)}


def _predict_local(plan: pd.DataFrame, spec: str, cfg: EvalConfig) -> pd.DataFrame:
    from ffr.d3s.predict import Predictor

    batch_size = cfg.batch_size
    predictor = Predictor(spec, **_head(cfg))
    parts = []
    for start in range(0, len(plan), batch_size):
        chunk = plan.iloc[start:start + batch_size]
        out = predictor({k: chunk[k].to_numpy() for k in chunk.columns})
        parts.append(pd.DataFrame({**{k: v for k, v in out.items() if k not in ("top5", "top5_scores")},
                                   "top5": list(out["top5"]), "top5_scores": list(out["top5_scores"])}))
    return pd.concat(parts, ignore_index=True)


def _predict_ray(plan: pd.DataFrame, spec: str, cfg: EvalConfig) -> pd.DataFrame:
    import ray

    from ffr.d3s.predict import Predictor
    from ffr.ray_session import ensure_ray
    from pipelines.job import ray_data_console

    ensure_ray()
    # blocks of a few batches each, in tar order: the pool streams through the plan, bounded in memory
    step = max(cfg.batch_size * BLOCK_BATCHES, -(-len(plan) // 1000))
    ds = ray.data.from_pandas([plan.iloc[i:i + step] for i in range(0, len(plan), step)]).map_batches(
        Predictor, fn_constructor_kwargs={"spec": spec, "threads": max(1, int(cfg.num_cpus_per_actor)), **_head(cfg)},
        batch_size=cfg.batch_size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(min_size=cfg.min_actors, max_size=cfg.max_actors),
        num_gpus=cfg.num_gpus_per_actor, num_cpus=cfg.num_cpus_per_actor)
    parts = []
    with ray_data_console(cfg.verbose):
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):  # streamed; only small arrays return
            if not parts:
                first = (time.perf_counter(), len(batch["id"]))
            parts.append(pd.DataFrame({"id": batch["id"], "model": batch["model"],
                                       "y": batch["y"].astype(np.int64), "background": batch["background"],
                                       "top5": list(batch["top5"]), "top5_scores": list(batch["top5_scores"])}))
    span = time.perf_counter() - first[0]
    out = pd.concat(parts, ignore_index=True)
    # after the pool is up and the first batch is back: the rate a long run settles at
    out.attrs["steady_images_per_s"] = (len(out) - first[1]) / span if span > 0 else float("nan")
    return out


def predict(plan: pd.DataFrame, spec: str, cfg: EvalConfig) -> pd.DataFrame:
    out = _predict_local(plan, spec, cfg) if cfg.local else _predict_ray(plan, spec, cfg)
    out["top5"] = [np.asarray(t, np.int64).tolist() for t in out["top5"]]
    out["top5_scores"] = [np.asarray(t, np.float32) for t in out["top5_scores"]]
    return out.sort_values("id", kind="stable").reset_index(drop=True)


def _write_parquet(fs, path: str, frame: pd.DataFrame) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = None
    if "top5_scores" in frame.columns:  # the predictions contract
        schema = pa.schema([("id", pa.string()), ("model", pa.string()), ("y", pa.int64()),
                            ("background", pa.string()), ("top5", pa.list_(pa.int64())),
                            ("top5_scores", pa.list_(pa.float32()))])
        frame = frame[list(schema.names)]
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False), sink)
    write_atomic(fs, path, sink.getvalue())


def _heatmap(table: pd.DataFrame, class_names: tuple[str, ...], model: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = table.pivot(index="y", columns="background", values="top1")
    fig_h = min(40.0, 1.5 + 0.18 * len(grid))
    fig, ax = plt.subplots(figsize=(7, fig_h))
    im = ax.imshow(grid.to_numpy(dtype=float), aspect="auto", vmin=0, vmax=1, cmap="viridis", interpolation="nearest")
    ax.set_xticks(range(len(grid.columns)), grid.columns, rotation=45, ha="right")
    if len(grid) <= 60:
        ax.set_yticks(range(len(grid)), [class_names[i] if i < len(class_names) else str(i) for i in grid.index])
    ax.set_title(f"{model}: top-1 per class × background")
    fig.colorbar(im, ax=ax, fraction=0.05)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def evaluate(cfg: EvalConfig) -> dict:
    """Predict with every model, write predictions and tables; returns {summary rows, seconds, images/s}."""
    if not cfg.models:
        raise FFRError("no models to evaluate; expected at least one --model (e.g. resnet50, checkpoint:PATH)")
    if not cfg.output:
        raise FFRError("no output folder; expected --out DIR (local or s3://)")
    table = load_class_table(cfg.class_table)
    plan = shard_plan(cfg)
    ref_plan = reference_plan(cfg.reference, cfg.class_table) if cfg.reference else None
    preds, refs, timing = [], [], {}
    for spec in cfg.models:
        start = time.perf_counter()
        preds.append(predict(plan, spec, cfg))
        timing[spec] = {"images": len(plan), "seconds": round(time.perf_counter() - start, 3),
                        "steady_images_per_s": round(float(preds[-1].attrs.get("steady_images_per_s", "nan")), 1)}
        if ref_plan is not None:
            refs.append(predict(ref_plan, spec, cfg))
    pred = pd.concat(preds, ignore_index=True)
    ref = pd.concat(refs, ignore_index=True) if refs else None
    fs, base = filesystem(cfg.output)
    fs.makedirs(join(base, "heatmaps"), exist_ok=True)
    _write_parquet(fs, join(base, "predictions.parquet"), pred)
    per_bg = metrics.per_background(pred) if ref is None else metrics.drop_per_background(pred, ref)
    write_atomic(fs, join(base, "per_background.csv"), per_bg.to_csv(index=False, float_format="%.4f").encode())
    per_cb = metrics.per_class_background(pred)
    per_cb.insert(2, "class_name", [table.names[y] if y < len(table) else str(y) for y in per_cb["y"]])
    _write_parquet(fs, join(base, "per_class_background.parquet"), per_cb)
    if ref is not None:
        _write_parquet(fs, join(base, "reference.parquet"), ref)
    summary = metrics.summary(pred, ref)
    write_atomic(fs, join(base, "summary.csv"), summary.to_csv(index=False, float_format="%.4f").encode())
    write_atomic(fs, join(base, "summary.md"), summary_markdown(summary).encode())
    for model, part in per_cb.groupby("model"):
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(model))
        write_atomic(fs, join(base, "heatmaps", f"{safe}.png"), _heatmap(part, table.names, str(model)))
    write_atomic(fs, join(base, "eval_config.json"), json.dumps(asdict(cfg), indent=2).encode())
    return {"summary": summary.to_dict(orient="records"), "timing": timing, "images": len(plan)}


def summary_markdown(summary: pd.DataFrame) -> str:
    cols = list(summary.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in summary.itertuples(index=False):
        lines.append("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"
