import torch

from ffr.errors import FFRError
from ffr.methods.base import Method
from ffr.methods.registry import METHODS


@METHODS.register("reweight")
class GroupReweight(Method):
    """Loss reweighting: weight ∝ 1 / n_g, normalized so the mean weight over the training set is 1."""

    name = "reweight"

    def group_weights(self) -> torch.Tensor:
        if self.group_counts is None:
            raise FFRError("method 'reweight' needs training group counts; call setup() or pass group_counts")
        counts = torch.as_tensor(self.group_counts, dtype=torch.float32)
        nonempty = counts > 0
        weights = torch.zeros_like(counts)
        # N / (G_nonempty * n_g): sum_i w_{g_i} = N, so the mean training weight is exactly 1.
        weights[nonempty] = counts.sum() / (nonempty.sum() * counts[nonempty])
        return weights

    def loss(self, logits, targets, groups):
        w = self.group_weights().to(logits.device)[groups]
        return (w * self.per_example_loss(logits, targets)).mean()
