"""Data variants: which real and synthetic examples each training stage sees.

A variant is a class (``Variant``) that declares its stages and what each trains on (``stages``: real,
synthetic, or real + synthetic) and builds each stage's training set (``build``); ``ffr.training`` asks it
which data to load and which stages to run, and knows no variant by name. A new variant is one module with a
registered ``Variant`` subclass.

- ``none``: real only (one stage).
- ``usb`` / ``asb``: real + synthetic in one stage, synthetic counts from ``ffr.balance.synthetic_counts``;
  group-aware methods then see (y, b, source) groups, as in the FFR paper's baselines.
- ``ffr``: stage 1 = synthetic only, k per group (balanced; ``stage1_per_group`` changes the size: FFR's
  synthetic-budget ablation); stage 2 = real only.

Stage numbers: 1 is FFR's synthetic pretraining, 2 is always the stage that runs the chosen method, so the
final result of every variant is its stage-2 run. Validation and test are always real, (y, b) groups.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

from ffr.balance import synthetic_counts
from ffr.datasets.base import GroupedSplit
from ffr.datasets.synthetic import select_per_group
from ffr.errors import FFRError
from ffr.groups import GroupSpec, group_counts
from ffr.registry import Registry

VARIANTS: Registry = Registry("data variant", plugins="ffr.variants")
Counts = dict[tuple[int, int], int]
SourceCounts = dict[tuple[int, int, int], int]  # (y, b, source) → examples; source 0 real, 1 synthetic
PRETRAIN_STAGE, METHOD_STAGE = 1, 2
# What a stage trains on.
REAL, SYNTHETIC, REAL_AND_SYNTHETIC = "real", "synthetic", "real+synthetic"


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


def stage1_counts(counts: dict[tuple[int, int], int], per_group: int | float | None) -> dict[tuple[int, int], int]:
    """Stage-1 images per group: ``counts`` (FFR's k per group), or ``per_group`` images (an int), or that fraction
    of each group's count (a float, floored like FFR's ``num_gen // G``)."""
    if per_group is None:
        return dict(counts)
    if isinstance(per_group, float):
        return {g: int(per_group * n) for g, n in counts.items()}
    return {g: int(per_group) for g in counts}


def _synthetic_part(real_train: GroupedSplit, synthetic: GroupedSplit, mode: str, seed: int,
                    per_group: int | float | None = None) -> GroupedSplit:
    counts = stage1_counts(synthetic_counts(group_counts(real_train.y, real_train.b), mode), per_group)
    picked = select_per_group(synthetic.y, synthetic.b, counts, seed, "the synthetic set")
    return synthetic.subset(picked, "train")


class Variant:
    """The contract of a data variant.

    ``stages``: stage number → what it trains on (REAL, SYNTHETIC or REAL_AND_SYNTHETIC), in training order;
    the last is always METHOD_STAGE (the stage the chosen method runs in, whose result is the experiment's).
    ``build`` gives one stage's training set; ``synthetic`` is None when no wanted stage needs it."""

    name: ClassVar[str] = ""
    stages: ClassVar[dict[int, str]] = {METHOD_STAGE: REAL}
    pretrain_method: ClassVar[str] = "erm"  # what the stages before METHOD_STAGE train with (ffr.methods)
    # The config's stage1.per_group (images per group, or a fraction of k; None: the variant's own size), for
    # variants with a synthetic stage 1; set by ``create``.
    stage1_per_group: int | float | None = None

    def build(self, stage: int, real_train: GroupedSplit, synthetic: GroupedSplit | None, seed: int) -> StageData:
        return StageData(stage, real_train, real_train.spec)

    def stage_counts(self, stage: int, real: Counts) -> SourceCounts:
        """How many examples ``build`` gives stage ``stage`` per (y, b, source), from the real training counts alone
        (no data read: cost previews use it). A real-only stage counts the real set; a variant with synthetic
        stages declares its own (tests/test_variants.py checks it against ``build``)."""
        if self.stages[stage] != REAL:
            raise FFRError(f"variant {self.name!r} does not say how many images stage {stage} trains on "
                           "(Variant.stage_counts); cost previews need it")
        return {(y, b, 0): n for (y, b), n in real.items()}

    def wanted_stages(self, stage: int | None = None, init_checkpoint: bool = False) -> list[int]:
        """The stages to build: ``stage`` alone (a worker), else all of them; a given init checkpoint replaces
        every stage before the method stage."""
        if stage is not None:
            if stage not in self.stages:
                raise FFRError(f"variant {self.name!r} has no stage {stage}; its stages: {sorted(self.stages)}")
            return [stage]
        return [s for s in self.stages if s == METHOD_STAGE or not init_checkpoint]

    def needs_synthetic(self, stages: Iterable[int] | None = None) -> bool:
        return any(SYNTHETIC in self.stages[s] for s in (self.stages if stages is None else stages))


@VARIANTS.register("none")
class RealOnly(Variant):
    name = "none"


class _Mixed(Variant):
    """Real + synthetic (``name``'s counts, ffr.balance.synthetic_counts) in one stage, (y, b, source) groups."""

    stages = {METHOD_STAGE: REAL_AND_SYNTHETIC}

    def stage_counts(self, stage, real):
        added = {(y, b, 1): n for (y, b), n in synthetic_counts(real, self.name).items() if n > 0}
        return {**{(y, b, 0): n for (y, b), n in real.items()}, **added}

    def build(self, stage, real_train, synthetic, seed):
        synthetic = _check_specs(real_train, synthetic, self.name)
        mixed = GroupedSplit.concat([real_train, _synthetic_part(real_train, synthetic, self.name, seed)], "train")
        return StageData(stage, mixed, real_train.spec.with_sources())


@VARIANTS.register("usb")
class USB(_Mixed):
    name = "usb"


@VARIANTS.register("asb")
class ASB(_Mixed):
    name = "asb"


@VARIANTS.register("ffr")
class FFR(Variant):
    """Stage 1: synthetic only, k per group (balanced); stage 2 (the method): real only."""

    name = "ffr"
    stages = {PRETRAIN_STAGE: SYNTHETIC, METHOD_STAGE: REAL}

    def stage_counts(self, stage, real):
        if stage == PRETRAIN_STAGE:
            counts = stage1_counts(synthetic_counts(real, self.name), self.stage1_per_group)
            return {(y, b, 1): n for (y, b), n in counts.items() if n > 0}
        return super().stage_counts(stage, real)

    def build(self, stage, real_train, synthetic, seed):
        if stage == PRETRAIN_STAGE:
            synthetic = _check_specs(real_train, synthetic, self.name)
            part = _synthetic_part(real_train, synthetic, self.name, seed, self.stage1_per_group)
            return StageData(stage, part, real_train.spec)
        return super().build(stage, real_train, synthetic, seed)


def create(variant: str, stage1_per_group: int | float | None = None) -> Variant:
    v = VARIANTS.get(variant)()
    v.stage1_per_group = stage1_per_group
    return v

