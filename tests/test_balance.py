"""FFR's counting rules against hand-computed cases (and the counts derived from the FFR code's splits)."""

import numpy as np
import pytest

from ffr.balance import downsample_indices, keep_counts, synthetic_counts
from ffr.errors import FFRError

# CelebA-HQ Smiling × Male, full per-group train counts before downsampling (FFR's shipped splits at 0.9 have
# majorities 5335 and 7797); expected kept minority sizes are ceil(M * (1 - r) / r).
CELEBA = {(0, 0): 914, (0, 1): 5335, (1, 0): 7797, (1, 1): 943}


@pytest.mark.parametrize("ratio, minority_0, minority_1", [
    (0.95, 281, 411),    # 5335*.05/.95 = 280.8 → 281 ; 7797*.05/.95 = 410.4 → 411
    (0.99, 54, 79),      # 53.9 → 54 ; 78.8 → 79
    (0.999, 6, 8),       # 5.3 → 6 ; 7.8 → 8
])
def test_keep_counts_matches_ffr_celeba(ratio, minority_0, minority_1):
    kept = keep_counts(CELEBA, ratio)
    assert kept == {(0, 0): minority_0, (0, 1): 5335, (1, 0): 7797, (1, 1): minority_1}


def test_keep_counts_four_classes_two_groups_each():
    counts = {(0, 0): 1000, (0, 1): 400, (1, 0): 50, (1, 1): 900, (2, 0): 300, (2, 1): 300, (3, 0): 8, (3, 1): 20}
    kept = keep_counts(counts, 0.9)
    # class 0: M=1000 → ceil(111.1)=112 ; class 1: M=900 → 100 but only 50 exist ; class 2: tie → first is the
    # majority, the other keeps ceil(33.3)=34 ; class 3: M=20 → ceil(2.2)=3
    assert kept == {(0, 0): 1000, (0, 1): 112, (1, 0): 50, (1, 1): 900, (2, 0): 300, (2, 1): 34, (3, 0): 3, (3, 1): 20}
    val = keep_counts(counts, 0.9, floor=10)
    assert val[(3, 0)] == 8 and val[(2, 1)] == 34 and val[(0, 1)] == 112  # floor 10 never exceeds what exists


def test_keep_counts_val_floor():
    assert keep_counts({(0, 0): 666, (0, 1): 100}, 0.999, floor=10) == {(0, 0): 666, (0, 1): 10}
    assert keep_counts({(0, 0): 666, (0, 1): 100}, 0.999, floor=0) == {(0, 0): 666, (0, 1): 1}


def test_keep_counts_spuco_four_biases_per_class():
    counts = {(y, b): (10000 if y == b else 500) for y in range(4) for b in range(4)}
    kept = keep_counts(counts, 0.99)
    assert all(kept[(y, y)] == 10000 for y in range(4))
    assert all(kept[(y, b)] == 102 for y in range(4) for b in range(4) if y != b)  # ceil(101.01)


def test_synthetic_budgets_celeba_095():
    kept = keep_counts(CELEBA, 0.95)
    usb = synthetic_counts(kept, "usb")
    assert usb == {(0, 0): 7516, (0, 1): 2462, (1, 0): 0, (1, 1): 7386}
    assert sum(usb.values()) == 17364
    assert synthetic_counts(kept, "asb") == {g: 4341 for g in kept}
    assert synthetic_counts(kept, "ffr") == {g: 4341 for g in kept}


def test_synthetic_budgets_four_class_case():
    counts = {(0, 0): 10, (0, 1): 3, (1, 0): 1, (1, 1): 7, (2, 0): 4, (2, 1): 10, (3, 0): 0, (3, 1): 9}
    usb = synthetic_counts(counts, "usb")
    assert usb == {(0, 0): 0, (0, 1): 7, (1, 0): 9, (1, 1): 3, (2, 0): 6, (2, 1): 0, (3, 0): 10, (3, 1): 1}
    assert all(counts[g] + usb[g] == 10 for g in counts)
    assert synthetic_counts(counts, "asb") == {g: 36 // 8 for g in counts}  # S = 36, G = 8 → k = 4


@pytest.mark.parametrize("bad", [0.5, 1.0, 0.3, 1.2, "x", None])
def test_bias_ratio_outside_range_is_rejected(bad):
    with pytest.raises(FFRError, match="bias ratio"):
        keep_counts({(0, 0): 5, (0, 1): 5}, bad)


@pytest.mark.parametrize("counts, match", [({(0, 0): -1}, "non-negative"), ({}, "empty"), ({(0,): 3}, "pair")])
def test_bad_counts_are_rejected(counts, match):
    with pytest.raises(FFRError, match=match):
        keep_counts(counts, 0.9)


def test_unknown_synthetic_mode():
    with pytest.raises(FFRError, match="'xsb'"):
        synthetic_counts({(0, 0): 1}, "xsb")


def test_downsample_indices_is_seeded_and_exact():
    y = np.repeat([0, 0, 1, 1], [200, 50, 30, 300])
    b = np.repeat([0, 1, 0, 1], [200, 50, 30, 300])
    a = downsample_indices(y, b, 0.95, 0, np.random.default_rng(7))
    again = downsample_indices(y, b, 0.95, 0, np.random.default_rng(7))
    other = downsample_indices(y, b, 0.95, 0, np.random.default_rng(8))
    assert np.array_equal(a, again) and not np.array_equal(a, other)
    kept = {(yy, bb): int(np.sum((y[a] == yy) & (b[a] == bb))) for yy in (0, 1) for bb in (0, 1)}
    assert kept == {(0, 0): 200, (0, 1): 11, (1, 0): 16, (1, 1): 300}
    assert len(np.unique(a)) == len(a)
