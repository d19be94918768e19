"""D3S's disentangled model over any registered backbone: pooled features split into fg and bg parts.

The backbone's pooled features (``feature_dim`` wide) split into ``fg`` = the first ``fg_dim`` and ``bg`` = the
last ``bg_dim`` (D3S: ResNet-50's 2048 = 1798 fg + 250 bg). The class head reads fg only; a second head reads bg
and predicts the background (bias) label. The class head starts from the backbone's pretrained classifier where
it has one with this many classes (its columns for the fg dims, and its bias, as D3S initialises it from
ImageNet's fc); otherwise both heads start at random.

It is a Classifier to the rest of ffr: ``forward(x)`` gives class logits (from fg), ``features(x)`` the whole
pooled vector; ``forward(x, parts=True)`` gives all four pieces a disentanglement step needs in one pass.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ffr.errors import FFRError


class SplitOutput(NamedTuple):
    logits: torch.Tensor  # class logits from fg features
    bg_logits: torch.Tensor  # background logits from bg features
    fg: torch.Tensor
    bg: torch.Tensor


class SplitClassifier(nn.Module):
    """``backbone`` (an ffr.backbones.Classifier; its own head is dropped) with a class head on the first
    ``fg_dim`` and a background head on the last ``bg_dim`` pooled features."""

    def __init__(self, backbone: nn.Module, n_classes: int, n_bias: int, bg_dim: int, fg_dim: int | None = None
                 ) -> None:
        super().__init__()
        dim = int(backbone.feature_dim)
        fg_dim = dim - bg_dim if fg_dim is None else fg_dim
        if bg_dim < 1 or fg_dim < 1 or fg_dim + bg_dim > dim:
            raise FFRError(f"fg/bg split {fg_dim} + {bg_dim} does not fit the backbone's {dim} pooled features; "
                           f"expected bg_features (and fg_features) >= 1 with fg + bg <= {dim}")
        pretrained = getattr(backbone, "pretrained_head", None)
        backbone.head = nn.Identity()  # not trained, not in the state: the fg head replaces it
        self.backbone, self.feature_dim, self.fg_dim, self.bg_dim = backbone, dim, fg_dim, bg_dim
        self.head = nn.Linear(fg_dim, n_classes)
        self.bg_head = nn.Linear(bg_dim, n_bias)
        self.head_from_pretrained = pretrained is not None and pretrained[0].shape == (n_classes, dim)
        if self.head_from_pretrained:
            with torch.no_grad():
                self.head.weight.copy_(pretrained[0][:, :fg_dim])
                self.head.bias.copy_(pretrained[1])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.features(x)

    def logits_from_features(self, features: torch.Tensor) -> torch.Tensor:
        """Class logits from the whole pooled features (what evaluation extracts): the fg head on the fg part."""
        return self.head(self.split(features)[0])

    def split(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return features[:, :self.fg_dim], features[:, self.feature_dim - self.bg_dim:]

    def forward(self, x: torch.Tensor, parts: bool = False) -> torch.Tensor | SplitOutput:
        fg, bg = self.split(self.features(x))
        logits = self.head(fg)
        return SplitOutput(logits, self.bg_head(bg), fg, bg) if parts else logits
