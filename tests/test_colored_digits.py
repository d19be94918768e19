"""The embedded colored-digits dataset: offline, seeded, biased train/val, exactly balanced test."""

import numpy as np
import pytest

from ffr import colored_digits as cd
from ffr.balance import keep_counts
from ffr.datasets import create
from ffr.datasets.base import save_splits
from ffr.errors import FFRError
from ffr.groups import group_counts


def _digit_index(split) -> set[int]:
    return {int(k.split("/")[1]) for k in split.table["key"]}


def test_splits_bias_and_balance():
    before = create("colored-digits", bias_ratio=None, seed=0)
    splits = create("colored-digits", bias_ratio=0.95, seed=0)
    train, val, test = (group_counts(splits[s].y, splits[s].b) for s in ("train", "val", "test"))
    # Majority colors: small ↔ red, large ↔ green; the bias-ratio rule decides the minority sizes.
    assert train[(0, 0)] > 10 * train[(0, 1)] and train[(1, 1)] > 10 * train[(1, 0)]
    assert train == keep_counts(group_counts(before["train"].y, before["train"].b), 0.95)
    # Val and test: every digit in both colors, so their groups are exactly balanced per class, and the
    # smallest val group is large enough that one digit moves val WGA by less than a point.
    for counts in (val, test):
        assert counts[(0, 0)] == counts[(0, 1)] and counts[(1, 0)] == counts[(1, 1)]
    assert min(val.values()) >= 100 and min(train.values()) >= 20
    biased = create("colored-digits", bias_ratio=0.95, seed=0, balanced_val=False)["val"]
    assert min(group_counts(biased.y, biased.b).values()) == 10  # FFR's validation floor
    # One handwritten digit never appears in two splits; the full data set has both colors in every class.
    a, b, c = (_digit_index(splits[s]) for s in ("train", "val", "test"))
    assert not (a & b or a & c or b & c)
    assert set(before["train"].table[["y", "b"]].itertuples(index=False, name=None)) == {(0, 0), (0, 1), (1, 0),
                                                                                          (1, 1)}
    assert splits["train"].spec == cd.SPEC and set(splits["train"].source) == {0}


def test_images_are_colored_by_the_bias_and_labels_follow_the_digit():
    split = create("colored-digits", seed=0)["test"]
    for _, row in split.table.head(20).iterrows():
        image = np.asarray(split.load_image(row["key"]))
        assert image.shape == (cd.IMAGE_SIZE, cd.IMAGE_SIZE, 3) and image.dtype == np.uint8
        assert tuple(image[0, 0]) == cd.BACKGROUND_RGB[cd.BIAS_NAMES[row["b"]]]
        assert row["y"] == int(row["digit"] >= 5) and row["key"].endswith(cd.BIAS_NAMES[row["b"]])


def test_seeded_and_saved_with_relative_keys(tmp_path):
    a, b, c = (create("colored-digits", seed=s) for s in (3, 3, 4))
    assert a["train"].table.equals(b["train"].table) and not a["train"].table.equals(c["train"].table)
    save_splits(a, str(tmp_path / "splits.parquet"))
    import pandas as pd

    saved = pd.read_parquet(tmp_path / "splits.parquet")
    assert saved["key"].str.startswith("digits/").all() and len(saved) == sum(len(s) for s in a.values())


def test_bad_options_and_keys_are_clear_errors():
    with pytest.raises(FFRError, match=r"option 'dataset_options.pre_skew' of dataset 'colored-digits' = 0.2"):
        create("colored-digits", pre_skew=0.2)
    with pytest.raises(FFRError, match=r"option 'dataset_options.bias_ratio' of dataset 'colored-digits' = 1.5"):
        create("colored-digits", bias_ratio=1.5)
    with pytest.raises(FFRError, match=r"unknown option 'dataset_options.bias' of dataset 'colored-digits'"):
        create("colored-digits", bias=0.9)
    with pytest.raises(FFRError, match=r"option 'dataset_options.seed' .* = True"):
        create("colored-digits", seed=True)
    split = create("colored-digits")["val"]
    with pytest.raises(FFRError, match="digits/<index>/<red|green>"):
        split.load_image("digits/1/blue")
