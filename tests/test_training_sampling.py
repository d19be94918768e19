"""DDP-correct resampling: the workers together make the method's draws per epoch, not N each."""

import numpy as np
import pytest

import ffr.methods
from ffr.errors import FFRError
from ffr.training.sampling import EpochSampler, global_draw, worker_indices


def _skewed_groups() -> np.ndarray:
    return np.repeat([0, 1, 2, 3], [900, 50, 40, 1010])


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_resampling_draws_n_in_total_with_uniform_groups(world_size):
    groups = _skewed_groups()
    method = ffr.methods.create("resample")
    method.setup(groups, 4)
    n = len(groups)
    shares = [worker_indices(n, method.sampling_weights(groups), method.draws_per_epoch(n), seed=0, epoch=3,
                             rank=r, world_size=world_size) for r in range(world_size)]
    assert len({len(s) for s in shares}) == 1  # same number of batches on every worker
    drawn = np.concatenate(shares)
    assert n <= len(drawn) < n + world_size  # N in total (padding < world size), not N per worker
    freq = np.bincount(groups[drawn], minlength=4) / len(drawn)
    assert np.allclose(freq, 0.25, atol=0.03), freq
    # The shares are a partition of one global draw: same seed and epoch → same draw on every worker.
    padded = np.resize(global_draw(n, method.sampling_weights(groups), n, 0, 3), len(drawn))
    for r, share in enumerate(shares):
        assert np.array_equal(share, padded[r::world_size])


def test_shuffle_without_weights_is_a_partition_and_changes_per_epoch():
    a = [worker_indices(100, None, 100, seed=1, epoch=0, rank=r, world_size=2) for r in range(2)]
    assert sorted(np.concatenate(a).tolist()) == list(range(100))
    b = worker_indices(100, None, 100, seed=1, epoch=1, rank=0, world_size=2)
    assert not np.array_equal(a[0], b)
    assert np.array_equal(a[0], worker_indices(100, None, 100, seed=1, epoch=0, rank=0, world_size=2))


def test_jtt_upweights_error_set_in_total_draws():
    method = ffr.methods.create("jtt", upweight=5.0)
    errors = np.zeros(200, bool)
    errors[:20] = True
    method.set_error_set(errors)
    draws = method.draws_per_epoch(200)
    sampler = EpochSampler(200, method.sampling_weights(np.zeros(200, int)), draws, seed=0, rank=1, world_size=2)
    assert draws == 280 and len(sampler) == 140
    sampler.set_epoch(2)
    assert len(list(iter(sampler))) == 140


def test_bad_inputs_are_clear_errors():
    with pytest.raises(FFRError, match="empty"):
        global_draw(0, None, 0, 0, 0)
    with pytest.raises(FFRError, match="rank 2"):
        worker_indices(10, None, 10, 0, 0, rank=2, world_size=2)
    with pytest.raises(FFRError, match="sampling weights"):
        global_draw(3, np.array([1.0, -1.0, 1.0]), 3, 0, 0)
