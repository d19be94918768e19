"""Image classifiers, one registry: ``create_backbone(name, n_classes, pretrained=...)``.

Every backbone is a :class:`Classifier`: ``forward(x) -> logits`` and ``features(x)`` (the penultimate
layer, what DFR retrains a last layer on). A backbone built from weights that include a classifier (ImageNet's
fc) keeps that classifier as ``pretrained_head`` (weight, bias), outside its state: a method may start a head
from it (D3S's fg head starts from the pretrained fc's columns of its features). A backbone declares its options
(``backbone_options``) as an ``Options`` model (ffr.options): typed, one line naming a bad key, listed by
``--show-config``. ImageNet weights come from a local file or the torchvision cache — never the network: with
neither, the model starts from random init and says so with a warning.
"""

from __future__ import annotations

import io
import os
import warnings

import torch
import torchvision
from torch import nn

from ffr.errors import FFRError
from ffr.options import Field, NoOptions, Options
from ffr.registry import Registry

BACKBONES: Registry = Registry("backbone", plugins="ffr.backbones")
IMAGENET = "imagenet"


class Classifier(nn.Module):
    """A feature trunk plus a linear head; ``features`` is what the head sees."""

    # (weight [classes, feature_dim], bias) of the pretrained weights' own classifier, when they have one.
    pretrained_head: tuple[torch.Tensor, torch.Tensor] | None = None

    def __init__(self, trunk: nn.Module, feature_dim: int, n_classes: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.feature_dim = feature_dim
        self.head = nn.Linear(feature_dim, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.trunk(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _read_state(path: str) -> dict:
    from ffr.storage import filesystem

    fs, inner = filesystem(path)
    if fs.isdir(inner) and fs.exists(f"{inner.rstrip('/')}/model.pt"):  # an ffr training checkpoint directory
        inner = f"{inner.rstrip('/')}/model.pt"
    if not fs.exists(inner):
        raise FFRError(f"pretrained weights file {path!r} does not exist; expected a torch state_dict (.pth) or an "
                       "ffr checkpoint directory")
    with fs.open(inner, "rb") as f:
        state = torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    elif isinstance(state, dict) and isinstance(state.get("model"), dict):  # an ffr training checkpoint (model.pt)
        state = state["model"]
    if not isinstance(state, dict):
        raise FFRError(f"pretrained weights file {path!r} does not hold a state_dict")
    return state


def _torchvision_weights(builder, weights_enum, pretrained: str | None) -> tuple[nn.Module, bool]:
    """A torchvision model with ImageNet weights from ``pretrained`` (path), the hub cache, or random init;
    and whether weights were loaded."""
    model = builder(weights=None)
    if pretrained is None:
        return model, False
    if pretrained == IMAGENET:
        cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights_enum.url))
        if not os.path.exists(cached):
            warnings.warn(f"ImageNet weights not found at {cached}; starting {builder.__name__} from random init "
                          "(put the file there or pass pretrained=<path>)", stacklevel=3)
            return model, False
        pretrained = cached
    state = _read_state(pretrained)
    if not set(state) & set(model.state_dict()):
        raise FFRError(f"pretrained weights {pretrained!r} match no parameter of {builder.__name__}")
    _, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        warnings.warn(f"{len(unexpected)} keys of {pretrained!r} were not used (e.g. {unexpected[0]!r})", stacklevel=3)
    return model, True


def backbone(name: str, options: type[Options] = NoOptions):
    """Register ``fn(n_classes, pretrained, options) -> Classifier`` under ``name`` with its options model."""

    def decorator(fn):
        fn.Options = options
        return BACKBONES.register(name)(fn)

    return decorator


def _resnet(builder, weights_enum, n_classes: int, pretrained: str | None) -> Classifier:
    model, loaded = _torchvision_weights(builder, weights_enum, pretrained)
    dim = model.fc.in_features
    trunk = nn.Sequential(*(child for name, child in model.named_children() if name != "fc"))  # ends in avgpool
    classifier = Classifier(trunk, dim, n_classes)
    if loaded:
        classifier.pretrained_head = (model.fc.weight.detach().clone(), model.fc.bias.detach().clone())
    return classifier


@backbone("resnet50")
def resnet50(n_classes: int, pretrained: str | None, options: NoOptions) -> Classifier:
    """torchvision ResNet-50 with ImageNet-1k V1 weights, as in the FFR paper; new head for n_classes."""
    weights = torchvision.models.ResNet50_Weights.IMAGENET1K_V1
    return _resnet(torchvision.models.resnet50, weights, n_classes, pretrained)


@backbone("resnet18")
def resnet18(n_classes: int, pretrained: str | None, options: NoOptions) -> Classifier:
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    return _resnet(torchvision.models.resnet18, weights, n_classes, pretrained)


class SmallCNNOptions(Options):
    width: int = Field(32, ge=1, description="channels of the first conv block (the last two have 4x)")


@backbone("small-cnn", SmallCNNOptions)
def small_cnn(n_classes: int, pretrained: str | None, options: SmallCNNOptions) -> Classifier:
    """Four conv blocks and global pooling: fast on CPU, for the embedded colored-digits benchmark."""
    width = options.width
    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]

    trunk = nn.Sequential(*block(3, width), nn.MaxPool2d(2), *block(width, 2 * width), nn.MaxPool2d(2),
                          *block(2 * width, 4 * width), nn.MaxPool2d(2), *block(4 * width, 4 * width),
                          nn.AdaptiveAvgPool2d(1))
    model = Classifier(trunk, 4 * width, n_classes)
    if pretrained == IMAGENET:
        warnings.warn("small-cnn has no ImageNet weights; starting from random init", stacklevel=2)
    elif pretrained is not None:
        state = _read_state(pretrained)
        model.trunk.load_state_dict({k.removeprefix("trunk."): v for k, v in state.items() if k.startswith("trunk.")})
        if "head.weight" in state and state["head.weight"].shape[1] == model.feature_dim:
            model.pretrained_head = (state["head.weight"].clone(), state["head.bias"].clone())
    return model


def create_backbone(name: str, n_classes: int, pretrained: str | None = None, **options) -> Classifier:
    """The single entry point: a registered backbone with a fresh ``n_classes`` head; ``options`` are its
    ``backbone_options``, validated against its ``Options``."""
    if int(n_classes) < 2:
        raise FFRError(f"n_classes {n_classes!r} must be >= 2")
    return BACKBONES.get(name)(int(n_classes), pretrained, BACKBONES.options(name, options, "backbone_options"))


def names() -> list[str]:
    return BACKBONES.names()
