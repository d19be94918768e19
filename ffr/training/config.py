"""The typed training config (one per experiment) and the resolved per-stage settings derived from it.

An experiment is one (dataset, variant, method, seed, hyperparameters). Its stages are separate runs with
their own directories; their names are derived from the config's content, so rerunning the same command
finds the same run (and resumes it, or skips it when ``ffr_result.json`` says it is done), and FFR's stage 1
is shared by every stage-2 method trained on top of it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ffr.config import build, to_dict
from ffr.errors import FFRError
from ffr.runs import INFRA_FIELDS  # left out of run-name hashes
from ffr.tracking import MLflowConfig

if TYPE_CHECKING:
    from ffr.methods.base import PreliminaryRun

OPTIMIZERS = ("adam", "sgd")
BAD_IMAGE_POLICIES = ("fail", "skip")
EXECUTORS = ("ray-train", "local")  # local: in this process, no Ray Train start-up (ffr/training/local.py)


@dataclass
class StageOptions:
    """Settings for FFR's stage 1 (ERM on synthetic) that differ from the stage-2 ones; None = same.

    ``corruption`` (stage 1 only; FFR's synthetic-quality ablation): degrade every synthetic training image
    with ``ffr.corruptions`` (pixelate, defocus-blur, gaussian-noise) at ``corruption_severity`` 1–5."""

    epochs: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    batch_size: int | None = None
    optimizer: str | None = None
    corruption: str | None = None
    corruption_severity: int = 3  # ignored (reset to 3) without a corruption, so such configs name one run


@dataclass
class FaultInjection:
    """For tests of failure recovery: worker ``rank`` kills its own process (``os._exit``) once, after
    ``after_batches`` batches of epoch ``kill_at_epoch``, if ``marker`` does not exist (it creates it first).
    It waits ``delay_s`` first: Ray Train's controller collects reports (and so registers the previous
    epoch's checkpoint) by polling workers every 2 s, and a real failure does not strike within a second."""

    kill_at_epoch: int
    marker: str
    rank: int = 0
    after_batches: int = 1
    delay_s: float = 5.0


@dataclass
class MixStream:
    """A second, class-only training stream mixed into every batch (D3S's 32 ImageNet images beside 32 D3S
    images): a registered dataset whose ``train`` split carries the same class indices as the main one and no
    bias label. ``batch_size`` (global) of its images join each batch of ``batch_size`` main images; only a
    method that declares ``mixes_class_only`` accepts them (their group id is -1)."""

    dataset: str = "class-folder"
    dataset_options: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 32


@dataclass
class TrainConfig:
    # data
    dataset: str = "colored-digits"
    dataset_options: dict[str, Any] = field(default_factory=dict)  # reader options: root, bias_ratio, seed, ...
    synthetic_root: str | None = None  # a generation output (local or s3://), for variants with synthetic data
    synthetic_review: str | None = None  # "accepted": only ids that `ffr review export` accepted
    variant: str = "none"
    # method (stage 2)
    method: str = "erm"
    method_hparams: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    # model and optimization
    backbone: str = "resnet50"
    backbone_options: dict[str, Any] = field(default_factory=dict)  # e.g. {width: 16} for small-cnn
    pretrained: str | None = "imagenet"  # "imagenet" (local cache), a weights file path, or null (random init)
    image_size: int = 224
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 1e-5
    momentum: float = 0.9  # SGD only
    epochs: int = 50
    batch_size: int = 128  # global: split over workers
    # step-based training: every epoch (one validation, one checkpoint) is this many batches, drawn from
    # reshuffled passes over the training set; null = one pass over it
    steps_per_epoch: int | None = None
    mix: MixStream | None = None  # a class-only stream mixed into every batch (see MixStream)
    # training images get RandomResizedCrop(image_size) + horizontal flip (D3S) instead of the plain resize;
    # evaluation always resizes
    augment: bool = False
    stage1: StageOptions = field(default_factory=lambda: StageOptions(lr=1e-4))
    # stage 2 (FFR's --freeze_bn ablation): BatchNorm layers keep the running statistics they start with
    # (stage 1's, or ImageNet's) and normalize with them; their affine weights still train
    freeze_bn: bool = False
    # stage 2 starts from: a checkpoint dir, a run dir, or "best:<sweep dir>" (best stage-1 run by mean val WGA)
    init_checkpoint: str | None = None
    # execution
    executor: str = "ray-train"  # or "local": train in the calling process (one worker; small runs, Tune trials)
    storage_path: str = "runs"  # local dir or s3://bucket/prefix
    run_name: str | None = None  # default: derived from the config's content
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    max_failures: int = 3  # worker failures survived per run (restart from the latest checkpoint)
    controller_failure_limit: int = 5  # failed worker-group starts (e.g. no resources) before giving up
    keep_checkpoints: int = 2  # the best (by val WGA) and the latest are always among them
    cache_in_memory: bool = False  # keep decoded, resized images in RAM (small datasets)
    loader_workers: int = 0
    fault_injection: FaultInjection | None = None
    # MLflow tracking (ffr.tracking): by default a sqlite store beside a local storage_path
    mlflow: MLflowConfig = field(default_factory=MLflowConfig)
    # A corrupt or unreadable real image: "fail" stops the run with one line naming the file (when it is read;
    # dataset_options.verify=true reads all up front); "skip" decodes every real image up front on the driver,
    # drops the bad ones from their split and records how many in the result file (bad_images_skipped).
    bad_images: str = "fail"
    skipped_images: list[str] | None = None  # filled by the driver under "skip", so workers drop the same rows

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise FFRError(f"optimizer {self.optimizer!r} is unknown; expected one of {', '.join(OPTIMIZERS)}")
        if self.stage1.optimizer not in (None, *OPTIMIZERS):
            raise FFRError(f"stage1.optimizer {self.stage1.optimizer!r} is unknown; expected one of {OPTIMIZERS}")
        for name in ("epochs", "batch_size", "num_workers", "image_size", "keep_checkpoints"):
            value = getattr(self, name)
            if value < (0 if name == "epochs" else 1):
                raise FFRError(f"{name} = {value!r} is out of range; expected a positive integer")
        if self.bad_images not in BAD_IMAGE_POLICIES:
            raise FFRError(f"bad_images = {self.bad_images!r}; expected one of {', '.join(BAD_IMAGE_POLICIES)}")
        if self.executor not in EXECUTORS:
            raise FFRError(f"executor {self.executor!r} is unknown; expected one of {', '.join(EXECUTORS)}")
        if self.executor == "local" and self.num_workers != 1:
            raise FFRError(f"executor 'local' trains in one process; num_workers = {self.num_workers} needs ray-train")
        if self.stage1.corruption is None:
            self.stage1.corruption_severity = StageOptions.corruption_severity
        else:
            from ffr import corruptions, variants

            corruptions.create(self.stage1.corruption)
            corruptions.check_severity(self.stage1.corruption_severity)
            stages = sorted(variants.create(self.variant).stages)
            if variants.PRETRAIN_STAGE not in stages:
                raise FFRError(f"stage1.corruption degrades the stage-1 training images; variant {self.variant!r} "
                               f"has no stage 1 (its stages: {stages}; expected a variant with a stage 1)")
        if self.lr <= 0:
            raise FFRError(f"lr = {self.lr!r} must be > 0")
        if self.augment and self.cache_in_memory:
            raise FFRError("augment: true draws a new crop every time an image is read; cache_in_memory: true "
                           "transforms each image once. Expected one of them off")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise FFRError(f"steps_per_epoch = {self.steps_per_epoch!r}; expected a positive integer or null")
        if self.mix is not None:
            if self.mix.batch_size < 1:
                raise FFRError(f"mix.batch_size = {self.mix.batch_size!r}; expected a positive integer")
            from ffr.methods import METHODS

            if not METHODS.get(self.method).mixes_class_only:
                raise FFRError(f"method {self.method!r} cannot train on mixed batches (mix: a class-only stream); "
                               "expected a method that accepts them, e.g. erm or disentangle")


@dataclass
class StageSpec:
    """What one run trains: resolved from a TrainConfig for stage 1 or 2 (or a method's preliminary run)."""

    stage: int
    run_name: str
    method: str
    method_hparams: dict[str, Any]
    optimizer: str
    lr: float
    weight_decay: float
    momentum: float
    epochs: int
    batch_size: int
    init_checkpoint: str | None = None
    role: str = "train"  # "train" | a preliminary run's role (ffr.methods.base.PreliminaryRun.role)
    preliminary: dict[str, Any] | None = None  # the preliminary run's result, for the method's main run
    corruption: str | None = None  # stage 1 only: ffr.corruptions name applied to the training images
    corruption_severity: int | None = None
    freeze_bn: bool = False  # BatchNorm running statistics frozen while training (stage 2 only)


def parse(config: TrainConfig | dict) -> TrainConfig:
    return config if isinstance(config, TrainConfig) else build(TrainConfig, dict(config))


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:8]


# Keys that enter a run name's digest only when set away from their default, so runs named before they
# existed keep their names.
_NEW_KEY_DEFAULTS = {"bad_images": "fail", "steps_per_epoch": None, "mix": None, "augment": False}


def experiment_fields(cfg: TrainConfig) -> dict[str, Any]:
    return {k: v for k, v in to_dict(cfg).items()
            if k not in INFRA_FIELDS and not (k in _NEW_KEY_DEFAULTS and v == _NEW_KEY_DEFAULTS[k])}


def method_stage(cfg: TrainConfig, init_checkpoint: str | None = None) -> StageSpec:
    name = cfg.run_name or f"{cfg.dataset}-{cfg.variant}-{cfg.method}-s{cfg.seed}-{_digest(experiment_fields(cfg))}"
    return StageSpec(2, name, cfg.method, dict(cfg.method_hparams), cfg.optimizer, cfg.lr, cfg.weight_decay,
                     cfg.momentum, cfg.epochs, cfg.batch_size, init_checkpoint, freeze_bn=cfg.freeze_bn)


def pretrain_stage(cfg: TrainConfig) -> StageSpec:
    """Stage 1 of a variant that has one: the variant's pretraining method (ERM) on its stage-1 data; named by
    what it depends on, so every stage-2 method shares it."""
    from ffr import variants

    s1, method = cfg.stage1, variants.create(cfg.variant).pretrain_method
    spec = StageSpec(1, "", method, {}, s1.optimizer or cfg.optimizer, s1.lr if s1.lr is not None else cfg.lr,
                     s1.weight_decay if s1.weight_decay is not None else cfg.weight_decay, cfg.momentum,
                     s1.epochs if s1.epochs is not None else cfg.epochs, s1.batch_size or cfg.batch_size,
                     corruption=s1.corruption, corruption_severity=s1.corruption_severity if s1.corruption else None)
    depends = {k: getattr(cfg, k) for k in ("dataset", "dataset_options", "synthetic_root", "seed", "backbone",
                                            "backbone_options", "pretrained", "image_size")}
    if cfg.synthetic_review:  # only when set, so existing stage-1 run names stay the same
        depends["synthetic_review"] = cfg.synthetic_review
    depends.update({k: v for k, v in dataclasses.asdict(spec).items() if k not in ("run_name", "preliminary")})
    depends["error_set"] = None  # a StageSpec field of old (now ``preliminary``), kept so run names stay the same
    spec.run_name = f"{cfg.dataset}-{cfg.variant}-stage1-s{cfg.seed}-{_digest(depends)}"
    return spec


def preliminary_stage(main: StageSpec, run: PreliminaryRun) -> StageSpec:
    """A method's preliminary run (e.g. JTT's identification): the main run's data, init and optimizer."""
    return dataclasses.replace(main, run_name=run.name, method=run.method, method_hparams=dict(run.method_hparams),
                               epochs=run.epochs, role=run.role, preliminary=None)


def resolved(cfg: TrainConfig, spec: StageSpec) -> dict[str, Any]:
    """The config one run actually used (written as its config.json)."""
    out = to_dict(cfg)
    out.update({k: v for k, v in dataclasses.asdict(spec).items() if k != "preliminary"})
    return out


def option_rows(cfg: TrainConfig, prefix: str = "") -> dict[str, list[tuple]]:
    """--show-config rows of the chosen dataset's, backbone's and method's options (defaults, resolved values,
    descriptions), for ``format_config(expand=...)``; a bad option is one line naming its key."""
    from ffr.backbones import BACKBONES
    from ffr.datasets import DATASETS
    from ffr.methods import METHODS
    from ffr.options import rows as option_table

    rows = {}
    for registry, name, key in ((DATASETS, cfg.dataset, "dataset_options"),
                                (BACKBONES, cfg.backbone, "backbone_options"),
                                (METHODS, cfg.method, "method_hparams")):
        resolved = registry.options(name, getattr(cfg, key), key)
        rows[f"{prefix}{key}"] = option_table(type(resolved), resolved, f"{prefix}{key}.")
    return rows
