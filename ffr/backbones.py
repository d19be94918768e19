"""Image classifiers, one registry: ``create_backbone(name, n_classes, pretrained=...)``.

Every backbone is a :class:`Classifier`: ``forward(x) -> logits`` and ``features(x)`` (the penultimate
layer, what DFR retrains a last layer on). A backbone built from weights that include a classifier (ImageNet's
fc) keeps that classifier as ``pretrained_head`` (weight, bias), outside its state: a method may start a head
from it (D3S's fg head starts from the pretrained fc's columns of its features). A backbone declares its options
(``backbone_options``) as an ``Options`` model (ffr.options): typed, one line naming a bad key, listed by
``--show-config``.
ImageNet weights (``pretrained: imagenet``) come from the torchvision hub cache, or ``pretrained`` names the file
itself (a local path or an ``s3://`` copy) — never the network. Weights that cannot be found stop the run with one
line naming the file and the ways to provide it (:func:`check_pretrained`, called on the driver before Ray starts,
and again wherever a model is built): a paper run silently trained from random init would give numbers unrelated to
the paper. ``pretrained: null`` is the explicit way to train from scratch.

Each entry also carries its :class:`Preprocessing` (input size, mean, std, interpolation), as timm's
``pretrained_cfg`` travels with a model: the torchvision backbones read theirs from their ImageNet weights, and
training normalizes with it. A training checkpoint records it beside the backbone's name, options and class names
(:func:`describe`), so ``ffr d3s eval checkpoint:RUN`` rebuilds and feeds the model without the training config.
"""

from __future__ import annotations

import dataclasses
import io
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torchvision
from torch import nn

from ffr.errors import FFRError
from ffr.options import Field, NoOptions, Options
from ffr.registry import Registry

BACKBONES: Registry = Registry("backbone", plugins="ffr.backbones")
IMAGENET = "imagenet"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """What a backbone expects of an image: the whole image resized to ``input_size`` × ``input_size`` with
    ``interpolation`` (no crop, no flip: FFR's preprocessing, for training and evaluation alike), then
    normalized by ``mean`` and ``std`` per channel. ``interpolation`` is a torchvision/timm name (bilinear,
    bicubic, nearest...). A run's ``image_size`` sets the size it trains at (:meth:`at`)."""

    input_size: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"

    def at(self, input_size: int) -> Preprocessing:
        return dataclasses.replace(self, input_size=int(input_size))

    def transform(self, augment: bool = False) -> Callable:
        """PIL image → normalized CHW float tensor; ``augment`` (training only): RandomResizedCrop + horizontal
        flip instead of the resize, as D3S trained."""
        transforms = torchvision.transforms
        mode = transforms.InterpolationMode(self.interpolation)
        size = [transforms.RandomResizedCrop(self.input_size, interpolation=mode), transforms.RandomHorizontalFlip()]
        if not augment:
            size = [transforms.Resize((self.input_size, self.input_size), interpolation=mode)]
        return transforms.Compose([*size, transforms.ToTensor(), transforms.Normalize(self.mean, self.std)])

    def to_dict(self) -> dict:
        return {"input_size": self.input_size, "mean": list(self.mean), "std": list(self.std),
                "interpolation": self.interpolation}

    @classmethod
    def from_dict(cls, data: dict, where: str = "checkpoint") -> Preprocessing:
        try:
            prep = cls(int(data["input_size"]), tuple(float(v) for v in data["mean"]),
                       tuple(float(v) for v in data["std"]), str(data.get("interpolation", "bilinear")))
            torchvision.transforms.InterpolationMode(prep.interpolation)
        except (KeyError, TypeError, ValueError) as e:
            raise FFRError(f"{where}: preprocessing {data!r} is not valid ({e}); expected {{input_size, mean, std, "
                           "interpolation}") from None
        return prep


def _from_weights(weights_enum) -> Preprocessing:
    """The preprocessing torchvision's weights declare (their ``transforms()``): mean, std, interpolation and
    input (crop) size."""
    declared = weights_enum.transforms()
    return Preprocessing(int(declared.crop_size[0]), tuple(declared.mean), tuple(declared.std),
                         declared.interpolation.value)


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

    def logits_from_features(self, features: torch.Tensor) -> torch.Tensor:
        """Class logits from what :meth:`features` gives (evaluation extracts features once, then reads both)."""
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_from_features(self.features(x))


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


def _torchvision_weights(name: str, builder, weights_enum, pretrained: str | None) -> tuple[nn.Module, bool]:
    """A torchvision model with ImageNet weights from ``pretrained`` (a file) or the hub cache, or random init
    (None); and whether weights were loaded."""
    model = builder(weights=None)
    if pretrained is None:
        return model, False
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
    return model, True


def backbone(name: str, options: type[Options] = NoOptions, imagenet_weights=None,
             preprocessing: Preprocessing | None = None):
    """Register ``fn(n_classes, pretrained, options) -> Classifier`` under ``name`` with its options model;
    ``imagenet_weights`` (a torchvision weights enum) is what ``pretrained: imagenet`` loads, if it has any;
    ``preprocessing`` what its images go through (default: what ``imagenet_weights`` declare, else
    ImageNet's mean and std at 224, bilinear)."""

    def decorator(fn):
        fn.Options = options
        fn.imagenet_weights = imagenet_weights
        fn.preprocessing = preprocessing or (_from_weights(imagenet_weights) if imagenet_weights else Preprocessing())
        return BACKBONES.register(name)(fn)

    return decorator


def preprocessing(name: str) -> Preprocessing:
    """Backbone ``name``'s preprocessing (its registry entry's); an entry registered without the
    :func:`backbone` decorator gets ImageNet's, what training used before entries declared one."""
    return getattr(BACKBONES.get(name), "preprocessing", None) or Preprocessing()


def _resnet(name: str, builder, weights_enum, n_classes: int, pretrained: str | None) -> Classifier:
    model, loaded = _torchvision_weights(name, builder, weights_enum, pretrained)
    dim = model.fc.in_features
    trunk = nn.Sequential(*(child for name, child in model.named_children() if name != "fc"))  # ends in avgpool
    classifier = Classifier(trunk, dim, n_classes)
    if loaded:
        classifier.pretrained_head = (model.fc.weight.detach().clone(), model.fc.bias.detach().clone())
    return classifier


@backbone("resnet50", imagenet_weights=torchvision.models.ResNet50_Weights.IMAGENET1K_V1)
def resnet50(n_classes: int, pretrained: str | None, options: NoOptions) -> Classifier:
    """torchvision ResNet-50 with ImageNet-1k V1 weights, as in the FFR paper; new head for n_classes."""
    return _resnet("resnet50", torchvision.models.resnet50, resnet50.imagenet_weights, n_classes, pretrained)


@backbone("resnet18", imagenet_weights=torchvision.models.ResNet18_Weights.IMAGENET1K_V1)
def resnet18(n_classes: int, pretrained: str | None, options: NoOptions) -> Classifier:
    return _resnet("resnet18", torchvision.models.resnet18, resnet18.imagenet_weights, n_classes, pretrained)


class SmallCNNOptions(Options):
    width: int = Field(32, ge=1, description="channels of the first conv block (the last two have 4x)")


# Trained from scratch, so any fixed normalization works; ImageNet's is what the shipped colored-digits results
# were trained with (changing it would change them).
@backbone("small-cnn", SmallCNNOptions, preprocessing=Preprocessing(input_size=32))
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


# --- self-describing checkpoints -------------------------------------------------------------------------------


def describe(name: str, options: dict, class_names: Sequence[str], prep: Preprocessing) -> dict:
    """What a checkpoint of backbone ``name`` needs beside its weights to be used without its training config:
    the backbone and its options, the classes its head predicts (in order) and its preprocessing."""
    return {"backbone": name, "backbone_options": dict(options or {}), "num_classes": len(class_names),
            "class_names": [str(c) for c in class_names], "preprocessing": prep.to_dict()}


@dataclass
class Described:
    """A backbone rebuilt from a checkpoint: the model (weights loaded, eval mode), its classes, its preprocessing."""

    model: Classifier
    class_names: tuple[str, ...]
    preprocessing: Preprocessing


def _legacy_description(state: dict) -> dict | None:
    """A training checkpoint written before checkpoints described themselves: its resolved config names the
    backbone and image size, the head's weights give the class count; preprocessing was ImageNet's then."""
    config, weights = state.get("config"), state.get("model")
    if not isinstance(config, dict) or not isinstance(weights, dict) or "head.weight" not in weights:
        return None
    n = int(weights["head.weight"].shape[0])
    return describe(config["backbone"], config.get("backbone_options") or {}, [str(c) for c in range(n)],
                    Preprocessing().at(config.get("image_size", 224)))


def from_checkpoint(state: dict, where: str) -> Described:
    """The model a training checkpoint (``{"model": state_dict, ...}`` with :func:`describe`'s keys) holds;
    FFRError in one line naming ``where`` when it is not one."""
    info = state if isinstance(state, dict) and "backbone" in state else _legacy_description(state)
    if info is None:
        raise FFRError(f"checkpoint {where!r} is not an ffr training checkpoint; expected model.pt of `ffr train` "
                       "(model weights, backbone, backbone_options, class_names, preprocessing)")
    if info["backbone"] not in BACKBONES:
        raise FFRError(f"checkpoint {where!r} was trained with backbone {info['backbone']!r}, which is not "
                       f"registered here; expected one of {BACKBONES.names()}")
    model = create_backbone(info["backbone"], int(info["num_classes"]), None, **info["backbone_options"])
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise FFRError(f"weights of {where!r} do not fit backbone {info['backbone']!r}: "
                       f"{str(e).splitlines()[0]}") from None
    return Described(model.eval(), tuple(info["class_names"]), Preprocessing.from_dict(info["preprocessing"], where))
