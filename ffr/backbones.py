"""Image classifiers, one registry: ``create_backbone(name, n_classes, pretrained=...)``.

Every backbone is a :class:`Classifier`: ``forward(x) -> logits`` and ``features(x)`` (the penultimate
layer, what DFR retrains a last layer on). A backbone declares its options (``backbone_options``) as an
``Options`` model (ffr.options): typed, one line naming a bad key, listed by ``--show-config``.
ImageNet weights (``pretrained: imagenet``) come from the torchvision hub cache, or ``pretrained`` names the file
itself (a local path or an ``s3://`` copy) — never the network. Weights that cannot be found stop the run with one
line naming the file and the ways to provide it (:func:`check_pretrained`, called on the driver before Ray starts,
and again wherever a model is built): a paper run silently trained from random init would give numbers unrelated to
the paper. ``pretrained: null`` is the explicit way to train from scratch.
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
    if not fs.exists(inner):
        raise FFRError(f"pretrained weights file {path!r} does not exist; expected a torch state_dict (.pth)")
    with fs.open(inner, "rb") as f:
        state = torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise FFRError(f"pretrained weights file {path!r} does not hold a state_dict")
    return state


def _cached(weights_enum) -> str:
    """Where torchvision keeps ``weights_enum``'s file: ``$TORCH_HOME/hub/checkpoints/<file>``."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights_enum.url))


def _missing_imagenet(name: str, weights_enum) -> FFRError:
    file = os.path.basename(weights_enum.url)
    return FFRError(
        f"pretrained: imagenet needs {name}'s ImageNet weights file {file}, which is not in the torch hub cache "
        f"({_cached(weights_enum)}), and ffr never downloads at run time; provide it: put the file there on every "
        f"training node (torchvision's {type(weights_enum).__name__}.{weights_enum.name}, {weights_enum.url}), or set "
        f"pretrained to a local path or an s3:// copy of it (e.g. pretrained=s3://my-bucket/weights/{file}), or "
        "pretrained=null to train from scratch")


def check_pretrained(name: str, pretrained: str | None) -> str | None:
    """Where backbone ``name``'s weights for ``pretrained`` will come from (None: from scratch); FFRError in one
    line when they cannot be reached. Cheap (a file lookup, one object-store HEAD): the driver calls it before
    Ray starts, so a paper config never trains from random init by accident."""
    if pretrained is None:
        return None
    builder = BACKBONES.get(name)
    if pretrained == IMAGENET:
        weights = getattr(builder, "imagenet_weights", None)
        if weights is None:
            raise FFRError(f"backbone {name!r} has no ImageNet weights; expected pretrained: null (train from "
                           "scratch) or a weights file (local path or s3://)")
        if not os.path.exists(_cached(weights)):
            raise _missing_imagenet(name, weights)
        return _cached(weights)
    from ffr.storage import filesystem

    fs, inner = filesystem(pretrained)
    if not fs.exists(inner):
        hint = getattr(builder, "imagenet_weights", None)
        file = f" (ImageNet: {os.path.basename(hint.url)})" if hint is not None else ""
        raise FFRError(f"pretrained weights file {pretrained!r} does not exist; expected a torch state_dict of "
                       f"{name}{file} as a local path or s3:// URI, pretrained: imagenet (torch hub cache), or "
                       "pretrained: null to train from scratch")
    return pretrained


def _torchvision_weights(name: str, builder, weights_enum, pretrained: str | None) -> nn.Module:
    """A torchvision model with ImageNet weights from ``pretrained`` (a file) or the hub cache; None: random."""
    model = builder(weights=None)
    if pretrained is None:
        return model
    if pretrained == IMAGENET:
        if not os.path.exists(_cached(weights_enum)):
            raise _missing_imagenet(name, weights_enum)
        pretrained = _cached(weights_enum)
    state = _read_state(pretrained)
    if not set(state) & set(model.state_dict()):
        raise FFRError(f"pretrained weights {pretrained!r} match no parameter of {builder.__name__}")
    _, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        warnings.warn(f"{len(unexpected)} keys of {pretrained!r} were not used (e.g. {unexpected[0]!r})", stacklevel=3)
    return model


def backbone(name: str, options: type[Options] = NoOptions, imagenet_weights=None):
    """Register ``fn(n_classes, pretrained, options) -> Classifier`` under ``name`` with its options model;
    ``imagenet_weights`` (a torchvision weights enum) is what ``pretrained: imagenet`` loads, if it has any."""

    def decorator(fn):
        fn.Options = options
        fn.imagenet_weights = imagenet_weights
        return BACKBONES.register(name)(fn)

    return decorator


def _resnet(name: str, builder, weights_enum, n_classes: int, pretrained: str | None) -> Classifier:
    model = _torchvision_weights(name, builder, weights_enum, pretrained)
    dim = model.fc.in_features
    trunk = nn.Sequential(*(child for name, child in model.named_children() if name != "fc"))  # ends in avgpool
    return Classifier(trunk, dim, n_classes)


@backbone("resnet50", imagenet_weights=torchvision.models.ResNet50_Weights.IMAGENET1K_V1)
def resnet50(n_classes: int, pretrained: str | None, options: NoOptions) -> Classifier:
    """torchvision ResNet-50 with ImageNet-1k V1 weights, as in the FFR paper; new head for n_classes."""
    return _resnet("resnet50", torchvision.models.resnet50, resnet50.imagenet_weights, n_classes, pretrained)


@backbone("resnet18", imagenet_weights=torchvision.models.ResNet18_Weights.IMAGENET1K_V1)
def resnet18(n_classes: int, pretrained: str | None, options: NoOptions) -> Classifier:
    return _resnet("resnet18", torchvision.models.resnet18, resnet18.imagenet_weights, n_classes, pretrained)


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
        check_pretrained("small-cnn", pretrained)  # raises: it has none
    elif pretrained is not None:
        state = _read_state(pretrained)
        model.trunk.load_state_dict({k.removeprefix("trunk."): v for k, v in state.items() if k.startswith("trunk.")})
    return model


def create_backbone(name: str, n_classes: int, pretrained: str | None = None, **options) -> Classifier:
    """The single entry point: a registered backbone with a fresh ``n_classes`` head; ``options`` are its
    ``backbone_options``, validated against its ``Options``."""
    if int(n_classes) < 2:
        raise FFRError(f"n_classes {n_classes!r} must be >= 2")
    return BACKBONES.get(name)(int(n_classes), pretrained, BACKBONES.options(name, options, "backbone_options"))


def names() -> list[str]:
    return BACKBONES.names()
