"""``estimate_training(configs) -> CostEstimate``: the runs and epochs a list of training configs trains, and what
they cost (``ffr train --dry-run``, ``ffr sweep --dry-run``; a paper grid is one call).

Per config: the real training counts per group (the dataset's published counts at the config's bias ratio, or,
for a dataset without them, counted by reading it — never written), each stage's training set from the variant
(``Variant.stage_counts``: the same rule ``build`` follows), a method's preliminary run, the epochs. Runs of the
same name count once: FFR's stage 1 is shared by every method and trial of one seed and setting. Per run:
GPU-hours = images trained and evaluated / the per-GPU rate, the smaller of the backbone's rate on the GPU type
and the DataLoader's decoding rate (ffr/throughput.yaml); storage = kept checkpoints (model + optimizer state,
from the backbone's parameter count) plus the run's files.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ffr import variants
from ffr.cost import CPU, CostEstimate, RunEstimate, Throughput, format_bytes, hours, loader_rate
from ffr.errors import FFRError
from ffr.groups import SOURCE_NAMES
from ffr.training.config import TrainConfig, method_stage, parse, pretrain_stage

SYNTHETIC_PIXELS = 512 * 512  # the FFR and D3S recipes' generation size (what stage 1 decodes)
STARTUP_S = 60.0  # guess: Ray Train worker-group start and the first checkpoint, per run and GPU
OPTIMIZER_STATE = {"adam": 2, "sgd": 1}  # copies of the parameters an optimizer keeps


@dataclasses.dataclass
class RealCounts:
    splits: dict[str, dict[tuple[int, int], int]]
    spec: Any
    pixels: int | None
    source: str


def real_counts(cfg: TrainConfig) -> RealCounts:
    """The real split counts training would see, without training: published reference counts where the dataset
    declares them, else counted by reading the dataset (read only)."""
    from ffr.datasets import create, reference_counts

    reference = reference_counts(cfg.dataset, **cfg.dataset_options)
    if reference is not None:
        bias_ratio = cfg.dataset_options.get("bias_ratio")
        return RealCounts(reference.at_bias_ratio(bias_ratio), reference.spec, reference.pixels,
                          f"{reference.source}, at bias ratio {bias_ratio}; dataset_options.root is not read")
    from ffr.groups import group_counts

    splits = create(cfg.dataset, **cfg.dataset_options)
    return RealCounts({name: group_counts(s.y, s.b) for name, s in splits.items()}, splits["train"].spec, None,
                      f"counted from dataset {cfg.dataset!r} (read, not written)")


def _group_label(spec, key: tuple[int, int, int], mixed: bool) -> str:
    y, b, source = key
    name = spec.pair_name(y, b)
    return f"{name}/{SOURCE_NAMES[source]}" if mixed else name


@dataclasses.dataclass
class _Model:
    params: int
    buffers: int


_MODELS: dict[tuple, _Model] = {}


def _model_size(cfg: TrainConfig, n_classes: int) -> _Model:
    """Parameter and buffer counts of the backbone (built with random weights; cached per process)."""
    key = (cfg.backbone, n_classes, tuple(sorted(cfg.backbone_options.items())))
    if key not in _MODELS:
        from ffr.backbones import create_backbone

        model = create_backbone(cfg.backbone, n_classes, pretrained=None, **cfg.backbone_options)
        _MODELS[key] = _Model(sum(p.numel() for p in model.parameters()), sum(b.numel() for b in model.buffers()))
    return _MODELS[key]


class _Estimator:
    def __init__(self, gpu: str | None, table: Throughput | None) -> None:
        self.table = table or Throughput.load()
        self.gpu_arg = gpu
        self.sources: list[str] = []
        self.notes: list[str] = []
        self.missing = False

    def source(self, line: str) -> None:
        if line not in self.sources:
            self.sources.append(line)

    def note(self, line: str) -> None:
        if line not in self.notes:
            self.notes.append(line)

    def device(self, cfg: TrainConfig) -> str:
        return self.table.gpu(self.gpu_arg) if cfg.use_gpu else CPU

    def rates(self, cfg: TrainConfig, pixels: int | None, corrupt: bool) -> tuple[float | None, float | None, str]:
        """(train, eval) images per second per worker, and what bounds them."""
        device = self.device(cfg)
        found = self.table.training(cfg.backbone, device)
        if found is None:
            self.missing = True
            self.source(f"no entry for backbone {cfg.backbone!r} on {device} in {self.table.origin}; add one with "
                         "--throughput FILE (training.<backbone>.gpus)")
            return None, None, ""
        rate, entry = found
        self.source(rate.line())
        scale = (float(entry.get("image_size", cfg.image_size)) / cfg.image_size) ** 2  # cost ∝ pixels
        train, evaluate = rate.values["train_images_per_s"] * scale, rate.values["eval_images_per_s"] * scale
        compute = "compute-bound" if device == CPU else "GPU-bound"
        if cfg.cache_in_memory or pixels is None:
            return train, evaluate, compute
        loading, how = loader_rate(self.table, pixels, cfg.loader_workers, corrupt)
        self.source(how)
        self.source(f"loader times: {self.table.loader.get('source', 'no source given')}")
        if loading < train:
            self.note("a run bound by data loading trains faster with more loader_workers (one CPU core each) or "
                      "with images stored at the training size")
            return loading, min(evaluate, loading), f"bound by data loading: {loading:,.0f} img/s per worker"
        return train, min(evaluate, loading), compute

    def checkpoint_bytes(self, cfg: TrainConfig, optimizer: str, n_classes: int) -> int:
        size = _model_size(cfg, n_classes)
        state = size.params * (1 + OPTIMIZER_STATE.get(optimizer, 2)) + size.buffers
        return int(4 * state + self.table.storage("checkpoint_overhead_bytes"))


def _stages(cfg: TrainConfig) -> list[int]:
    return variants.create(cfg.variant).wanted_stages(None, cfg.init_checkpoint is not None)


def _config_runs(cfg: TrainConfig, est: _Estimator) -> tuple[list[RunEstimate], RealCounts]:
    import ffr.methods

    counts = real_counts(cfg)
    real_train, val, test = (counts.splits[s] for s in ("train", "val", "test"))
    n_val, n_test = sum(val.values()), sum(test.values())
    variant = variants.create(cfg.variant, cfg.stage1.per_group)
    stages = _stages(cfg)
    device = est.device(cfg)
    runs: list[RunEstimate] = []
    for stage in stages:
        spec = pretrain_stage(cfg) if stage == variants.PRETRAIN_STAGE else method_stage(cfg)
        try:
            per_group = variant.stage_counts(stage, real_train)
        except FFRError as e:
            est.note(str(e))
            continue
        mixed = len({k[2] for k in per_group}) > 1
        groups = {_group_label(counts.spec, k, mixed): n for k, n in sorted(per_group.items())}
        n_train = sum(per_group.values())
        method = ffr.methods.create(spec.method, **spec.method_hparams)
        synthetic_only = all(k[2] == 1 for k in per_group)
        pixels = SYNTHETIC_PIXELS if synthetic_only else counts.pixels
        train_rate, eval_rate, bound = est.rates(cfg, pixels, corrupt=bool(spec.corruption))
        checkpoint = est.checkpoint_bytes(cfg, spec.optimizer, counts.spec.n_classes)
        stored = int(cfg.keep_checkpoints * checkpoint + est.table.storage("run_files_bytes"))
        source = "synthetic" if synthetic_only else ("real + synthetic" if mixed else "real")
        jobs = []
        preliminary = method.preliminary_run() if stage == variants.METHOD_STAGE and spec.epochs > 0 else None
        if preliminary is not None:  # e.g. JTT's identification run: same data, its own epochs, predicts train
            jobs.append((f"{spec.run_name}/{preliminary.name}", f"stage {stage} {preliminary.role}: "
                         f"{preliminary.method} on {source}", preliminary.epochs, n_train, n_train, stored))
            est.note(f"{spec.method}: epochs are counted with {n_train:,} draws each; its upweighted error set "
                      "adds draws the dry run cannot know")
        final = n_val + n_test + (n_train + n_val if method.fits_on_features() else 0)  # DFR: train/val features
        try:
            draws = int(method.draws_per_epoch(n_train))
        except FFRError:  # known only after a preliminary run (JTT)
            draws = n_train
        if cfg.steps_per_epoch is not None:  # step-based epochs: so many batches, plus the mix stream's share
            draws = cfg.steps_per_epoch * (cfg.batch_size + (cfg.mix.batch_size if cfg.mix is not None else 0))
            if cfg.mix is not None:
                est.note(f"mix: {cfg.mix.batch_size} class-only images join every batch of {cfg.batch_size}; "
                         "counted as training images")
        jobs.append((spec.run_name, f"stage {stage}: {spec.method} on {source}", spec.epochs, draws, final, stored))
        for name, what, epochs, draws_, final_, stored_ in jobs:
            evaluated = epochs * n_val + final_
            if train_rate is None:
                gpu_hours = None
            else:
                gpu_hours = hours(epochs * draws_ / train_rate + evaluated / eval_rate
                                  + (STARTUP_S * cfg.num_workers if device != CPU else 0.0))
            runs.append(RunEstimate(name, what, groups, epochs, draws_, evaluated, cfg.num_workers, gpu_hours,
                                    stored_, bound))
    return runs, counts


def estimate_training(configs: list[TrainConfig | dict[str, Any]] | TrainConfig | dict[str, Any],
                      gpu: str | None = None, table: Throughput | None = None, title: str | None = None
                      ) -> CostEstimate:
    """The dry run of one training config or a list of them (a sweep, a paper grid): every run they train (a
    shared run once), its epochs and images, GPU-hours on ``gpu`` (None: the table's default; CPU for configs
    with ``use_gpu: false``) and storage bytes. Raises FFRError on a bad config, like the run."""
    items = configs if isinstance(configs, list) else [configs]
    cfgs = [parse(c) for c in items]
    if not cfgs:
        raise FFRError("estimate_training needs at least one training config")
    est = _Estimator(gpu, table)
    runs: list[RunEstimate] = []
    seen: set[str] = set()
    sources: list[str] = []
    for cfg in cfgs:
        config_runs, counts = _config_runs(cfg, est)
        if counts.source not in sources:
            sources.append(counts.source)
        for run in config_runs:
            if run.name not in seen:
                seen.add(run.name)
                runs.append(run)
    first = cfgs[0]
    device = est.device(first)
    if title is None:
        what = (f"{first.dataset}, variant {first.variant}, method {first.method}, seed {first.seed}"
                if len(cfgs) == 1 else f"{len(cfgs)} training configs")
        title = f"ffr train --dry-run: {what}; nothing is started or written"
    out = CostEstimate(title, device, runs=runs, sources=[*est.sources],
                       notes=[f"real counts: {s}" for s in sources] + est.notes)
    out.gpu_hours = None if est.missing or any(r.gpu_hours is None for r in runs) else \
        sum(r.gpu_hours or 0.0 for r in runs)
    out.storage_bytes = sum(r.storage_bytes for r in runs)
    workers = max(c.num_workers for c in cfgs)
    if out.gpu_hours is not None:
        out.wall_hours = out.gpu_hours / workers  # runs of one config train one after the other
    checkpoint = runs[0].storage_bytes if runs else 0
    if runs:
        out.notes.append(f"storage per run: {first.keep_checkpoints} kept checkpoints (model + optimizer state) and "
                         f"its files, about {format_bytes(checkpoint)}")
    return out
