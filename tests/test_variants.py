"""Data variants: which real and synthetic examples each stage trains on (counts from ffr.balance)."""

import numpy as np
import pandas as pd
import pytest

from ffr import colored_digits as cd
from ffr.balance import synthetic_counts
from ffr.datasets import create
from ffr.datasets.base import GroupedSplit
from ffr.errors import FFRError
from ffr.groups import GroupSpec, group_counts
from ffr.variants import REAL, REAL_AND_SYNTHETIC, SYNTHETIC, VARIANTS, StageData
from ffr.variants import create as create_variant


@pytest.fixture(scope="module")
def real_train() -> GroupedSplit:
    return create("colored-digits", bias_ratio=0.95, seed=0)["train"]


def _synthetic(per_group: int, spec: GroupSpec = cd.SPEC) -> GroupedSplit:
    rows = [{"key": f"s{y}{b}-{i}", "y": y, "b": b, "source": 1}
            for y in range(spec.n_classes) for b in range(spec.n_bias) for i in range(per_group)]
    return GroupedSplit(spec, pd.DataFrame(rows), lambda key: None, "train")


def stages(variant: str, real_train: GroupedSplit, synthetic: GroupedSplit | None, seed: int) -> list[StageData]:
    """Every stage of ``variant``, in order, as training builds them (``Variant.build``)."""
    built = create_variant(variant)
    return [built.build(stage, real_train, synthetic, seed) for stage in built.stages]


@pytest.mark.parametrize("variant", VARIANTS.names())
def test_every_variant_builds_its_stages(variant, real_train):
    synthetic = _synthetic(600)
    built = stages(variant, real_train, synthetic, seed=0)
    real = group_counts(real_train.y, real_train.b)
    final = built[-1]
    assert final.stage == 2  # the method stage is stage 2 in every variant
    declared = VARIANTS.get(variant).stages  # what each stage trains on, as the variant declares it
    assert [s.stage for s in built] == list(declared)
    for s in built:
        assert set(s.train.source) == {REAL: {0}, SYNTHETIC: {1}, REAL_AND_SYNTHETIC: {0, 1}}[declared[s.stage]]
        # what cost previews count without data is what build gives
        got = pd.Series(1, index=pd.MultiIndex.from_arrays([s.train.y, s.train.b, s.train.source])).groupby(
            level=[0, 1, 2]).sum()
        assert {tuple(int(v) for v in k): int(n) for k, n in got.items()} == \
            create_variant(variant).stage_counts(s.stage, real)
    if variant == "none":
        assert len(built) == 1 and final.train is real_train and not final.uses_synthetic
        return
    if variant == "ffr":
        pretrain, finetune = built
        assert pretrain.stage == 1 and set(pretrain.train.source) == {1}
        assert group_counts(pretrain.train.y, pretrain.train.b) == synthetic_counts(real, "ffr")
        assert finetune.train is real_train and not finetune.train_spec.with_source
        return
    # usb / asb: real + synthetic in one stage, (y, b, source) groups for group-aware methods
    mixed = final.train
    assert final.train_spec.with_source and final.train_spec.n_groups == 8
    real_part, synth_part = mixed.source == 0, mixed.source == 1
    assert group_counts(mixed.y[real_part], mixed.b[real_part]) == real
    wanted = {g: n for g, n in synthetic_counts(real, variant).items() if n > 0}
    assert group_counts(mixed.y[synth_part], mixed.b[synth_part]) == wanted
    if variant == "usb":  # every group filled up to the largest one
        total = group_counts(mixed.y, mixed.b)
        assert len(set(total.values())) == 1
    groups = mixed.groups(final.train_spec)
    assert set(np.unique(groups)) <= set(range(8))
    assert mixed.load_image(mixed.table["key"].iloc[-1]) is None  # each row keeps its own loader


def test_synthetic_selection_is_seeded(real_train):
    synthetic = _synthetic(600)
    keys = [set(stages("asb", real_train, synthetic, seed=s)[0].train.table["key"]) for s in (0, 0, 1)]
    assert keys[0] == keys[1] != keys[2]


def test_too_little_or_mismatched_synthetic_data_is_a_clear_error(real_train):
    with pytest.raises(FFRError, match=r"has 20 images of group \(y=\d, b=\d\) but \d+ are needed"):
        stages("usb", real_train, _synthetic(20), seed=0)
    with pytest.raises(FFRError, match="needs synthetic data"):
        stages("ffr", real_train, None, seed=0)
    other = GroupSpec(("cat", "dog"), ("red", "green"))
    with pytest.raises(FFRError, match="do not match"):
        stages("asb", real_train, _synthetic(600, other), seed=0)
    with pytest.raises(FFRError, match="unknown data variant 'mix'"):
        stages("mix", real_train, None, seed=0)


def test_variants_say_which_stages_to_build_and_whether_they_need_synthetic_data():
    two_stage = create_variant("ffr")
    assert two_stage.wanted_stages() == [1, 2] and two_stage.needs_synthetic([1, 2])
    assert two_stage.wanted_stages(init_checkpoint=True) == [2]  # a given checkpoint replaces stage 1
    assert two_stage.wanted_stages(stage=2) == [2] and not two_stage.needs_synthetic([2])  # stage 2's workers
    assert create_variant("usb").needs_synthetic(create_variant("usb").wanted_stages(init_checkpoint=True))
    assert not create_variant("none").needs_synthetic()
    with pytest.raises(FFRError, match="variant 'none' has no stage 1"):
        create_variant("none").wanted_stages(stage=1)
