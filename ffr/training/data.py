"""An experiment's data, built the same way (deterministically) on the driver and in every worker."""

from __future__ import annotations

from dataclasses import dataclass

import ffr.datasets
from ffr.datasets.base import GroupedSplit
from ffr.errors import FFRError
from ffr.training.config import TrainConfig
from ffr.variants import METHOD_STAGE, StageData, needs_synthetic, stages


@dataclass
class ExperimentData:
    real: dict[str, GroupedSplit]
    stages: dict[int, StageData]

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
    """All stages' data, or only what ``stage`` needs (workers of FFR's stage 2 never read synthetic data)."""
    real = ffr.datasets.create(cfg.dataset, **cfg.dataset_options)
    for name in ("train", "val", "test"):
        if name not in real or len(real[name]) == 0:
            raise FFRError(f"dataset {cfg.dataset!r} has an empty {name!r} split; training needs train, val and test")
    data_seed = int(cfg.dataset_options.get("seed", 0))
    synthetic = None
    # FFR's stage 2 trains on real data only: no synthetic data when it starts from a given checkpoint.
    skip_stage1 = cfg.variant == "ffr" and (cfg.init_checkpoint is not None or stage == METHOD_STAGE)
    if needs_synthetic(cfg.variant) and not skip_stage1:
        if not cfg.synthetic_root:
            raise FFRError(f"variant {cfg.variant!r} needs synthetic_root (a generation output directory)")
        synthetic = ffr.datasets.create("synthetic", root=cfg.synthetic_root, review=cfg.synthetic_review)["train"]
    if skip_stage1:
        by_stage = {METHOD_STAGE: StageData(METHOD_STAGE, real["train"], real["train"].spec)}
    else:
        by_stage = {s.stage: s for s in stages(cfg.variant, real["train"], synthetic, data_seed)}
    return ExperimentData(real, by_stage)
