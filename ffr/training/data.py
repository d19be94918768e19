"""An experiment's data, resolved once on the driver (listings, tar indexes, bad-image scans); each stage's run
directory then gets it as a plan (ffr.training.plan) that workers and evaluation tasks read."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import ffr.datasets
from ffr import variants
from ffr.datasets.base import GroupedSplit
from ffr.errors import FFRError
from ffr.training.config import TrainConfig
from ffr.training.diagnostic import heldout_synthetic
from ffr.variants import StageData


@dataclass
class ExperimentData:
    real: dict[str, GroupedSplit]
    stages: dict[int, StageData]
    skipped_images: list[str] = field(default_factory=list)  # keys dropped under bad_images: skip
    generator: str | None = None  # the synthetic images' generator label(s), for results and report grouping
    # synthetic images no variant of this seed trains on, for the (B, G) diagnostic (ffr.training.diagnostic)
    heldout: GroupedSplit | None = None
    mix: GroupedSplit | None = None  # the class-only stream mixed into every batch (TrainConfig.mix)

    @property
    def val(self) -> GroupedSplit:
        return self.real["val"]

    @property
    def test(self) -> GroupedSplit:
        return self.real["test"]

    def splits_for(self, stage: int) -> dict[str, GroupedSplit]:
        """What a stage's run saves as splits.parquet: its training set plus real val and test."""
        return {"train": self.stages[stage].train, "val": self.val, "test": self.test}


def load_experiment_data(cfg: TrainConfig, stage: int | None = None) -> ExperimentData:
    """All stages' data, or only what ``stage`` needs (a real-only stage's workers never read
    synthetic data)."""
    real = ffr.datasets.create(cfg.dataset, **cfg.dataset_options)
    for name in ("train", "val", "test"):
        if name not in real or len(real[name]) == 0:
            raise FFRError(f"dataset {cfg.dataset!r} has an empty {name!r} split; training needs train, val and test")
    skipped: list[str] = []
    if cfg.bad_images == "skip":
        skipped = cfg.skipped_images if cfg.skipped_images is not None else find_bad_images(real)
        real = {name: drop_keys(split, set(skipped)) for name, split in real.items()}
    data_seed = int(cfg.dataset_options.get("seed", 0))
    synthetic = None
    # The variant says which stages to build and what they train on: synthetic data is read only when a
    # wanted stage trains on it (not by a real-only stage's workers, nor when a given checkpoint replaces it).
    variant = variants.create(cfg.variant, cfg.stage1.per_group)
    wanted = variant.wanted_stages(stage, cfg.init_checkpoint is not None)
    if variant.needs_synthetic(wanted):
        if not cfg.synthetic_root:
            raise FFRError(f"variant {cfg.variant!r} needs synthetic_root (a generation output directory)")
        synthetic = ffr.datasets.create("synthetic", root=cfg.synthetic_root, review=cfg.synthetic_review)["train"]
    by_stage = {s: variant.build(s, real["train"], synthetic, data_seed) for s in wanted}
    generator = None
    if synthetic is not None and "generator" in synthetic.table.columns:
        generator = " | ".join(sorted(set(synthetic.table["generator"].astype(str)))) or None
    heldout = None
    if synthetic is not None and cfg.diagnostic.enabled:
        heldout = heldout_synthetic(synthetic, real["train"], [d.train for d in by_stage.values()], data_seed,
                                    cfg.diagnostic.holdout_per_group)
    return ExperimentData(real, by_stage, list(skipped), generator, heldout, load_mix(cfg, real["train"]))


def load_mix(cfg: TrainConfig, main_train: GroupedSplit) -> GroupedSplit | None:
    """The ``train`` split of ``cfg.mix``'s dataset, checked to share the main data's class indices."""
    if cfg.mix is None:
        return None
    mix = ffr.datasets.create(cfg.mix.dataset, **cfg.mix.dataset_options)["train"]
    if len(mix) == 0:
        raise FFRError(f"mix: dataset {cfg.mix.dataset!r} has no training images")
    n_main, n_mix = main_train.spec.n_classes, mix.spec.n_classes
    if n_mix != n_main:
        raise FFRError(f"mix: dataset {cfg.mix.dataset!r} has {n_mix} classes but {cfg.dataset!r} has {n_main}; "
                       "expected one class index space (e.g. class-folder option 'classes': a class table)")
    return mix


_DECODE_THREADS = 16  # decoding is mostly waiting on storage (S3 latency); PIL releases the GIL while decoding


def find_bad_images(splits: dict[str, GroupedSplit]) -> list[str]:
    """Keys (as in the split tables) of every image that cannot be read or decoded, in sorted order."""

    def bad(split: GroupedSplit, key: str) -> bool:
        try:
            split.load_image(key)
            return False
        except FFRError:  # decode_image / ImageLoader: corrupt, not an image, or missing
            return True

    found: set[str] = set()
    with ThreadPoolExecutor(_DECODE_THREADS) as pool:
        for split in splits.values():
            keys = split.table["key"].astype(str).tolist()
            found.update(k for k, is_bad in zip(keys, pool.map(lambda k, s=split: bad(s, k), keys)) if is_bad)
    return sorted(found)


def drop_keys(split: GroupedSplit, keys: set[str]) -> GroupedSplit:
    if not keys:
        return split
    keep = ~split.table["key"].astype(str).isin(keys).to_numpy()
    return split.subset(keep.nonzero()[0])
