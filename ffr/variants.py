"""Data variants: which real and synthetic examples each training stage sees.

- ``none``: real only (one stage).
- ``usb`` / ``asb``: real + synthetic in one stage, synthetic counts from ``ffr.balance.synthetic_counts``;
  group-aware methods then see (y, b, source) groups, as in the FFR paper's baselines.
- ``ffr``: stage 1 = synthetic only, k per group (balanced); stage 2 = real only.

Stage numbers: 1 is FFR's synthetic pretraining, 2 is always the stage that runs the chosen method, so the
final result of every variant is its stage-2 run. Validation and test are always real, (y, b) groups.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ffr.balance import synthetic_counts
from ffr.datasets.base import GroupedSplit
from ffr.datasets.synthetic import select_per_group
from ffr.errors import FFRError
from ffr.groups import GroupSpec, group_counts
from ffr.registry import Registry

VARIANTS: Registry = Registry("data variant")
PRETRAIN_STAGE, METHOD_STAGE = 1, 2


@dataclass
class StageData:
    """One stage's training set and the group spec its method uses for group ids."""

    stage: int
    train: GroupedSplit
    train_spec: GroupSpec

    @property
    def uses_synthetic(self) -> bool:
        return bool((self.train.source == 1).any())


def _check_specs(real: GroupedSplit, synthetic: GroupedSplit | None, variant: str) -> GroupedSplit:
    if synthetic is None:
        raise FFRError(f"variant {variant!r} needs synthetic data; set synthetic_root to a generation output")
    r, s = real.spec, synthetic.spec
    if (r.class_names, r.bias_names) != (s.class_names, s.bias_names):
        raise FFRError(f"synthetic groups {list(s.class_names)} × {list(s.bias_names)} do not match the real "
                       f"dataset's {list(r.class_names)} × {list(r.bias_names)}")
    return synthetic


def _synthetic_part(real_train: GroupedSplit, synthetic: GroupedSplit, mode: str, seed: int) -> GroupedSplit:
    counts = synthetic_counts(group_counts(real_train.y, real_train.b), mode)
    picked = select_per_group(synthetic.y, synthetic.b, counts, seed, "the synthetic set")
    return synthetic.subset(picked, "train")


@VARIANTS.register("none")
def none(real_train: GroupedSplit, synthetic: GroupedSplit | None, seed: int) -> list[StageData]:
    return [StageData(METHOD_STAGE, real_train, real_train.spec)]


def _mixed(mode: str) -> Callable[[GroupedSplit, GroupedSplit | None, int], list[StageData]]:
    def variant(real_train: GroupedSplit, synthetic: GroupedSplit | None, seed: int) -> list[StageData]:
        synthetic = _check_specs(real_train, synthetic, mode)
        mixed = GroupedSplit.concat([real_train, _synthetic_part(real_train, synthetic, mode, seed)], "train")
        return [StageData(METHOD_STAGE, mixed, real_train.spec.with_sources())]

    variant.__doc__ = f"Real + synthetic ({mode.upper()} counts), (y, b, source) groups."
    return variant


VARIANTS.register("usb")(_mixed("usb"))
VARIANTS.register("asb")(_mixed("asb"))


@VARIANTS.register("ffr")
def ffr(real_train: GroupedSplit, synthetic: GroupedSplit | None, seed: int) -> list[StageData]:
    synthetic = _check_specs(real_train, synthetic, "ffr")
    pretrain = _synthetic_part(real_train, synthetic, "ffr", seed)
    return [StageData(PRETRAIN_STAGE, pretrain, real_train.spec), StageData(METHOD_STAGE, real_train, real_train.spec)]


def stages(variant: str, real_train: GroupedSplit, synthetic: GroupedSplit | None, seed: int) -> list[StageData]:
    """The training stages of ``variant``, in order."""
    return VARIANTS.get(variant)(real_train, synthetic, seed)


def needs_synthetic(variant: str) -> bool:
    VARIANTS.get(variant)
    return variant != "none"


def names() -> list[str]:
    return VARIANTS.names()
