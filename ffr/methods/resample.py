import numpy as np

from ffr.methods.base import Method, inverse_frequency
from ffr.methods.registry import METHODS


@METHODS.register("resample")
class GroupResample(Method):
    """Group-balanced resampling: weight N / n_g, with replacement, N draws per epoch (all workers together)."""

    name = "resample"

    def sampling_weights(self, train_groups: np.ndarray) -> np.ndarray:
        counts = self.group_counts if self.group_counts is not None else np.bincount(train_groups)
        return inverse_frequency(train_groups, counts)
