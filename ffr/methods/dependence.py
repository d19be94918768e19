"""Wasserstein dependence critics (WGAN-GP), D3S's stand-in for mutual information between features and labels.

A critic ``D`` scores a pair [z, E[l]]: features ``z`` beside a fixed random N(0, 1) embedding ``E[l]`` of a
label ``l``. *Joint* pairs keep each row's own label; *marginal* pairs use the labels permuted within the batch,
a sample of P(z)P(l). With D about 1-Lipschitz (the gradient penalty), ``mean D(marginal) - mean D(joint)``
estimates the Wasserstein-1 distance between P(z, l) and P(z)P(l): about 0 when z says nothing about l, and
positive when it does. The critic learns by minimising

    mean(D(joint) - D(marginal)) + gp_weight * mean((||grad D(x_hat)||_2 - 1)^2),

where x_hat mixes joint and marginal with eps ~ U(0, 1) drawn per element (as D3S's code does, not per row),
and the model minimises the estimate. Facts from D3S's ``train_disentanglement.py``; plain torch, no Ray.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


def halving_mlp(in_dim: int, slope: float = 0.1) -> nn.Sequential:
    """Linear layers that halve the width down to 1, LeakyReLU(``slope``) between them (none after the last)."""
    if in_dim < 2:
        raise ValueError(f"a critic needs at least 2 inputs, got {in_dim}")
    layers: list[nn.Module] = []
    width = in_dim
    while width != 1:
        layers += [nn.Linear(width, width // 2), nn.LeakyReLU(slope)]
        width //= 2
    return nn.Sequential(*layers[:-1])


class DependenceCritic(nn.Module):
    """D([z, E[label]]) for ``feature_dim``-dimensional features and ``n_labels`` labels. The label embedding
    (``int(embedding_fraction * feature_dim)`` wide) is a fixed buffer: saved with the critic, never trained."""

    def __init__(self, feature_dim: int, n_labels: int, embedding_fraction: float = 0.2, slope: float = 0.1) -> None:
        super().__init__()
        width = max(1, int(embedding_fraction * feature_dim))
        self.register_buffer("embedding", torch.randn(n_labels, width))
        self.net = halving_mlp(feature_dim + width, slope)

    def pairs(self, z: torch.Tensor, labels: torch.Tensor, permutation: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """(joint, marginal) critic inputs: [z, E[labels]] and [z, E[labels[permutation]]]."""
        e = self.embedding[labels]
        return torch.cat([z, e], 1), torch.cat([z, e[permutation]], 1)

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        return self.net(pair).squeeze(1)


@dataclass
class CriticStep:
    """One critic evaluation: its loss (for its optimiser), the dependence estimate and the gradient penalty."""

    loss: torch.Tensor
    estimate: torch.Tensor
    penalty: torch.Tensor


def gradient_penalty(critic: nn.Module, joint: torch.Tensor, marginal: torch.Tensor,
                     eps: torch.Tensor | None = None) -> torch.Tensor:
    """mean((||grad_x D(x_hat)||_2 - 1)^2) at x_hat = eps * joint + (1 - eps) * marginal, eps ~ U(0, 1) per element
    unless given; differentiable (create_graph), so the critic's step also minimises it."""
    eps = torch.rand_like(joint) if eps is None else eps
    mixed = (eps * joint + (1 - eps) * marginal).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    return ((grad.norm(2, dim=1) - 1) ** 2).mean()


def critic_step(critic: DependenceCritic, z: torch.Tensor, labels: torch.Tensor, gp_weight: float) -> CriticStep:
    """The critic's loss on detached features ``z``; the estimate is detached (a number to log)."""
    joint, marginal = critic.pairs(z.detach(), labels, torch.randperm(len(z), device=z.device))
    d_joint, d_marginal = critic(joint), critic(marginal)
    penalty = gradient_penalty(critic, joint, marginal)
    gap = (d_joint - d_marginal).mean()
    return CriticStep(gap + gp_weight * penalty, (-gap).detach(), penalty.detach())


def dependence(critic: DependenceCritic, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The model's penalty term: the critic's estimate mean(D(marginal) - D(joint)), differentiable in ``z``."""
    joint, marginal = critic.pairs(z, labels, torch.randperm(len(z), device=z.device))
    return (critic(marginal) - critic(joint)).mean()
