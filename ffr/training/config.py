"""The typed training config (one per experiment) and the resolved per-stage settings derived from it.

An experiment is one (dataset, variant, method, seed, hyperparameters). Its stages are separate runs with
their own directories; their names are derived from the config's content, so rerunning the same command
finds the same run (and resumes it, or skips it when ``ffr_result.json`` says it is done), and FFR's stage 1
is shared by every stage-2 method trained on top of it.

The content is the *resolved* config: a config is built with every registry entry's options filled with
their defaults (``dataset_options``, ``backbone_options``, ``method_hparams``), so writing a default out
(``method_hparams: {step_size: 0.01}``) names the same run as leaving it out, and ``config.json`` records the
hyperparameters the run actually used.
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
# auto: local when the run has one CPU worker and no GPU, else ray-train (resolve_executor);
# local: in this process, no Ray Train start-up (ffr/training/local.py)
EXECUTORS = ("auto", "ray-train", "local")


@dataclass
class StageOptions:
    """Settings for FFR's stage 1 (ERM on synthetic) that differ from the stage-2 ones; None = same.

    FFR's two stage-1 ablations:

    - ``corruption`` (synthetic quality): degrade every synthetic training image with ``ffr.corruptions`` at
      ``corruption_severity`` 1–5, at its generated size before the resize, with new noise every epoch.
      ``ffr-stacked`` is FFR's (pixelate + defocus blur + Gaussian noise); ``pixelate``, ``defocus-blur`` and
      ``gaussian-noise`` apply one alone.
    - ``per_group`` (synthetic budget): images per group in stage 1, an integer (e.g. 1000) or a fraction of FFR's
      k = ⌊S / G⌋ (e.g. 0.25; 2.0 needs twice k generated); None = k, FFR's default."""

    epochs: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    batch_size: int | None = None
    optimizer: str | None = None
    corruption: str | None = None
    corruption_severity: int = 3  # ignored (reset to 3) without a corruption, so such configs name one run
    per_group: int | float | None = None


@dataclass
class FaultInjection:
    """For tests of failure recovery: worker ``rank`` kills its own process (``os._exit``) once, after
    ``after_batches`` batches of epoch ``kill_at_epoch`` (numbered from 1, as on the console), if ``marker``
    does not exist (it creates it first).
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
class DiagnosticOptions:
    """FFR's (B, G) diagnostic (ffr.training.diagnostic) of every run whose experiment trains on synthetic
    images: the tested checkpoint on up to ``holdout_per_group`` held-out synthetic images per group (ones no
    variant of the seed trains on), and a real-vs-synthetic linear probe on its features. Evaluation only: it
    never changes a run's name, training or test numbers."""

    enabled: bool = True
    holdout_per_group: int = 200


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
    # BatchNorm statistics over the whole global batch when num_workers > 1 (ffr/training/batchnorm.py): FFR trained
    # batch 128 on one GPU, so its BatchNorm saw 128 images; without this, each of 4 DDP workers normalizes by its
    # own 32. false: per-worker statistics (cheaper; then the number of workers changes the experiment).
    sync_batchnorm: bool = True
    # stage 2 starts from: a checkpoint dir, a run dir, or "best:<sweep dir>" (best stage-1 run by mean val WGA)
    init_checkpoint: str | None = None
    # execution
    # "auto": in this process (local) for one CPU worker without a GPU, else Ray Train; "ray-train" or "local"
    # (train in the calling process: one worker; small runs, Tune trials) force one
    executor: str = "auto"
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
    diagnostic: DiagnosticOptions = field(default_factory=DiagnosticOptions)  # FFR's (B, G) diagnostic

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
            from ffr import corruptions

            corruptions.create(self.stage1.corruption)
            corruptions.check_severity(self.stage1.corruption_severity)
            self._need_stage1("stage1.corruption degrades the stage-1 training images")
        if self.stage1.per_group is not None:
            check_stage1_size(self.stage1.per_group)
            self._need_stage1("stage1.per_group sizes the stage-1 synthetic set")
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
        if self.diagnostic.holdout_per_group < 2:
            raise FFRError(f"diagnostic.holdout_per_group = {self.diagnostic.holdout_per_group!r}; expected an "
                           "integer >= 2 (the probe fits on half of each group's images and scores the other half)")
        self._fill_option_defaults()

    def _fill_option_defaults(self) -> None:
        """Each entry's options, validated and with every default written out (see the module docstring)."""
        from ffr.backbones import BACKBONES
        from ffr.datasets import DATASETS
        from ffr.methods import METHODS

        for registry, name, key in ((DATASETS, self.dataset, "dataset_options"),
                                    (BACKBONES, self.backbone, "backbone_options"),
                                    (METHODS, self.method, "method_hparams")):
            setattr(self, key, registry.options(name, getattr(self, key), key).to_dict())

    def _need_stage1(self, what: str) -> None:
        from ffr import variants

        stages = sorted(variants.create(self.variant).stages)
        if variants.PRETRAIN_STAGE not in stages:
            raise FFRError(f"{what}; variant {self.variant!r} has no stage 1 (its stages: {stages}; expected a "
                           "variant with a stage 1)")


def check_stage1_size(value: Any) -> int | float:
    """``stage1.per_group``: an integer >= 1 (images per group) or a float > 0 (a fraction of k)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise FFRError(f"stage1.per_group = {value!r}; expected images per group (an integer >= 1, e.g. 1000) or a "
                       "fraction of FFR's k (a number > 0 with a decimal point, e.g. 0.25 or 1.0)")
    return value


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
    synthetic_per_group: int | float | None = None  # stage 1 only: images per group, or a fraction of k (None: k)


def resolve_paths(config: TrainConfig | dict, base: str | None = None) -> dict[str, Any]:
    """The config as a dict with every path a user gave made absolute against ``base`` (default: the directory
    the command was started in): ``storage_path``, ``synthetic_root``, ``init_checkpoint`` (also after
    ``best:``), a ``pretrained`` weights file, the dataset's path options (its ``root``) and the class-only
    stream's (``mix``), a fault-injection
    marker and a relative ``sqlite:///`` tracking URI. Done once, on the driver, before Ray starts: Ray Train
    workers and Tune trials run in other working directories. URIs stay as they are."""
    import copy

    from ffr.storage import absolute, resolve_option_paths

    data = copy.deepcopy(to_dict(config) if isinstance(config, TrainConfig) else dict(config))
    data["storage_path"] = absolute(data.get("storage_path", TrainConfig.storage_path), base)  # default too
    if isinstance(data.get("synthetic_root"), str):
        data["synthetic_root"] = absolute(data["synthetic_root"], base)
    if isinstance(data.get("init_checkpoint"), str):
        prefix = "best:" if data["init_checkpoint"].startswith("best:") else ""
        data["init_checkpoint"] = prefix + absolute(data["init_checkpoint"][len(prefix):], base)
    if isinstance(data.get("pretrained"), str) and data["pretrained"] != "imagenet":
        data["pretrained"] = absolute(data["pretrained"], base)
    if isinstance(data.get("fault_injection"), dict) and isinstance(data["fault_injection"].get("marker"), str):
        data["fault_injection"]["marker"] = absolute(data["fault_injection"]["marker"], base)
    mlflow = data.get("mlflow")
    uri = mlflow.get("tracking_uri") if isinstance(mlflow, dict) else None
    if isinstance(uri, str) and uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        mlflow["tracking_uri"] = "sqlite:///" + absolute(uri[len("sqlite:///"):], base)
    dataset = data.get("dataset", TrainConfig.dataset)
    if isinstance(data.get("dataset_options"), dict) and isinstance(dataset, str):
        from ffr.datasets import DATASETS

        if dataset in DATASETS:
            reader = DATASETS.get(dataset)
            if hasattr(reader, "Options"):
                data["dataset_options"] = resolve_option_paths(reader.Options, data["dataset_options"], base)
    mix = data.get("mix")
    if isinstance(mix, dict) and isinstance(mix.get("dataset_options"), dict):  # the class-only stream's root too
        from ffr.datasets import DATASETS

        name = mix.get("dataset", MixStream.dataset)
        if isinstance(name, str) and name in DATASETS and hasattr(DATASETS.get(name), "Options"):
            mix["dataset_options"] = resolve_option_paths(DATASETS.get(name).Options, mix["dataset_options"], base)
    return data


def resolve_executor(cfg: TrainConfig) -> tuple[str, str]:
    """(executor, why) for ``executor: auto``: one CPU worker without a GPU trains in this process (Ray Train's
    controller and worker group cost ~20 s per run for no gain there), anything else on Ray Train. An explicit
    executor is kept. The run name never depends on it (an infrastructure field)."""
    if cfg.executor != "auto":
        return cfg.executor, "set in the config"
    if cfg.num_workers == 1 and not cfg.use_gpu:
        return "local", "auto: one CPU worker, no GPU; executor=ray-train trains on Ray Train"
    return "ray-train", f"auto: num_workers = {cfg.num_workers}, use_gpu = {str(cfg.use_gpu).lower()}"


def parse(config: TrainConfig | dict) -> TrainConfig:
    return config if isinstance(config, TrainConfig) else build(TrainConfig, dict(config))


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:8]


# Keys that enter a run's name only when they differ from their default, so runs named before they existed keep
# their names: bad_images; sync_batchnorm (its default makes BatchNorm independent of num_workers, as the run name
# already is); stage1.per_group (None = FFR's k); steps_per_epoch, mix and augment (D3S's training).
_NAMED_WHEN_SET = {"bad_images": "fail", "sync_batchnorm": True, "steps_per_epoch": None, "mix": None,
                   "augment": False}
# A corruption runs on the image at its generated size with new noise every draw (before: after the resize, the
# same noise every epoch), so runs with a corruption are named apart from those trained the old way.
CORRUPTION_AT = "generated size, new noise per draw"


def experiment_fields(cfg: TrainConfig) -> dict[str, Any]:
    fields = {k: v for k, v in to_dict(cfg).items()
              if k not in INFRA_FIELDS and not (k in _NAMED_WHEN_SET and v == _NAMED_WHEN_SET[k])}
    if fields["stage1"].get("per_group") is None:
        fields["stage1"] = {k: v for k, v in fields["stage1"].items() if k != "per_group"}
    if fields["stage1"].get("corruption"):
        fields["corruption_at"] = CORRUPTION_AT
    return fields


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
                     corruption=s1.corruption, corruption_severity=s1.corruption_severity if s1.corruption else None,
                     synthetic_per_group=s1.per_group)
    depends = {k: getattr(cfg, k) for k in ("dataset", "dataset_options", "synthetic_root", "seed", "backbone",
                                            "backbone_options", "pretrained", "image_size")}
    # Only when set, so existing stage-1 run names stay the same:
    if cfg.synthetic_review:
        depends["synthetic_review"] = cfg.synthetic_review
    if not cfg.sync_batchnorm:
        depends["sync_batchnorm"] = False
    if s1.corruption:  # the corruption now runs before the resize with new noise every epoch (older runs: after)
        depends["corruption_at"] = CORRUPTION_AT
    skip = {"run_name", "preliminary", *(("synthetic_per_group",) if spec.synthetic_per_group is None else ())}
    depends.update({k: v for k, v in dataclasses.asdict(spec).items() if k not in skip})
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
