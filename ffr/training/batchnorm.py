"""BatchNorm over the global batch under DDP (``sync_batchnorm``, on by default with ``num_workers > 1``).

Why: FFR trained with batch 128 on one GPU, so every BatchNorm layer normalized by the statistics of 128 images.
Spread over 4 DDP workers, plain BatchNorm normalizes each worker's 32 images by their own statistics — a
different (noisier) model, and one whose results change with the number of workers. Here each layer's training
statistics are those of the whole global batch, as on one GPU, so a run is the same experiment on 1 or N workers.

How: every worker computes its per-channel count, mean and variance; one all-reduce (autograd-aware, so the
backward pass sums the statistics' gradients over workers too) gives every worker all of them, combined exactly
(Chan et al.'s parallel variance). The running statistics get the global unbiased variance, as BatchNorm on one
process would. Outside training, or on a single process, the layer is plain BatchNorm. One implementation for
gloo (CPU, tested) and NCCL: ``torch.nn.SyncBatchNorm`` refuses CPU tensors. Parameters and buffers keep
BatchNorm's names, so checkpoints load into an unconverted model.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class _SumOverWorkers(torch.autograd.Function):
    """all_reduce(SUM) whose gradient is the all-reduced gradient (every worker's loss depends on every input)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """A BatchNorm layer (any dimensionality) whose training statistics are the global batch's across workers."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and _distributed()):
            return super().forward(x)
        self._check_input_dim(x)
        channels = x.shape[1]
        dims = [0, *range(2, x.dim())]
        var, mean = torch.var_mean(x.float(), dim=dims, unbiased=False)
        count = torch.full((1,), x.numel() / channels, dtype=torch.float32, device=x.device)
        local = torch.cat([count, mean, var])
        rank, world = dist.get_rank(), dist.get_world_size()
        # each worker fills its own row; the sum over workers is then every worker's (count, mean, var)
        rows = _SumOverWorkers.apply(torch.stack([local if r == rank else torch.zeros_like(local)
                                                  for r in range(world)]))
        counts, means, variances = rows[:, :1], rows[:, 1:channels + 1], rows[:, channels + 1:]
        total = counts.sum()
        global_mean = (counts * means).sum(0) / total
        global_var = (counts * (variances + (means - global_mean) ** 2)).sum(0) / total
        if self.track_running_stats:
            self._update_running_stats(global_mean.detach(), global_var.detach(), float(total))
        scale = torch.rsqrt(global_var + self.eps)
        shift = -global_mean * scale
        if self.affine:
            scale, shift = scale * self.weight, shift * self.weight + self.bias
        shape = (1, channels) + (1,) * (x.dim() - 2)
        return torch.addcmul(shift.view(shape), x.float(), scale.view(shape)).to(x.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, n: float) -> None:
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = var * (n / max(n - 1.0, 1.0))
        self.running_mean.mul_(1 - factor).add_(mean.to(self.running_mean.dtype), alpha=factor)
        self.running_var.mul_(1 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)


def convert(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm layer replaced by a :class:`GlobalBatchNorm` holding the same parameters,
    buffers and train/eval mode (in place where possible; returns the new root if the root itself is one)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        out = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats, device=_device_of(module))
        out.load_state_dict(module.state_dict())
        out.train(module.training)
        return out
    for name, child in module.named_children():
        converted = convert(child)
        if converted is not child:
            setattr(module, name, converted)
    return module


def _device_of(module: nn.Module) -> torch.device | None:
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return None
