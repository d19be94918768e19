import torch

from ffr import options
from ffr.errors import FFRError
from ffr.methods.base import Method, searchable
from ffr.methods.registry import METHODS


@METHODS.register("groupdro")
class GroupDRO(Method):
    """Group DRO (Sagawa et al. 2020), always robust.

    Per batch: group mean losses L_g (+ C / sqrt(n_g) when ``adjustment`` C > 0), then the
    exponentiated-gradient step q_g ← q_g · exp(η L_g), q ← q / Σq, and loss Σ_g q_g L_g. Under DDP the
    group losses for the q update are summed over workers so every worker keeps the same q.
    """

    name = "groupdro"

    class Options(options.Options):
        step_size: float = searchable(0.01, ("loguniform", 1e-3, 1e-1), gt=0,
                                      description="η of the exponentiated-gradient step on the group weights q")
        adjustment: float = searchable(0.0, ("choice", [0.0, 1.0, 2.0, 4.0]), ge=0,
                                       description="C of the generalization adjustment C / sqrt(n_g)")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.group_weights = torch.ones(self.n_groups) / self.n_groups if self.n_groups else None

    def setup(self, train_groups, n_groups):
        super().setup(train_groups, n_groups)
        self.group_weights = torch.ones(n_groups) / n_groups

    def loss(self, logits, targets, groups):
        if self.group_weights is None:
            raise FFRError("method 'groupdro' needs n_groups; pass n_groups=G or call setup()")
        G = len(self.group_weights)
        if int(groups.max()) >= G or int(groups.min()) < 0:
            raise FFRError(f"group id {int(groups.max())} out of range for groupdro with n_groups={G}")
        per_example = self.per_example_loss(logits, targets)
        one_hot = torch.nn.functional.one_hot(groups, G).to(per_example.dtype)  # (B, G)
        sums, counts = one_hot.t() @ per_example, one_hot.sum(0)
        group_loss = sums / counts.clamp(min=1)
        if self.options.adjustment > 0:
            if self.group_counts is None:
                raise FFRError("groupdro adjustment > 0 needs training group counts; call setup()")
            n = torch.as_tensor(self.group_counts, dtype=per_example.dtype, device=per_example.device)
            group_loss = group_loss + self.options.adjustment / n.clamp(min=1).sqrt()
            group_loss = torch.where(counts > 0, group_loss, torch.zeros_like(group_loss))
        with torch.no_grad():
            global_sums = self.all_reduce(torch.stack([sums.detach(), counts]))
            global_loss = global_sums[0] / global_sums[1].clamp(min=1)
            if self.options.adjustment > 0:
                global_loss = torch.where(global_sums[1] > 0, global_loss + self.options.adjustment /
                                          n.clamp(min=1).sqrt(), global_loss)
            q = self.group_weights.to(per_example.device) * torch.exp(self.options.step_size * global_loss)
            self.group_weights = (q / q.sum()).detach()
        return (self.group_weights.to(per_example.device) * group_loss).sum()

    def state_dict(self):
        return {"group_weights": self.group_weights.cpu()}

    def load_state_dict(self, state):
        self.group_weights = state["group_weights"].clone()


