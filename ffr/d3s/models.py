"""Classifiers to evaluate, by name, with the preprocessing their own weights declare (never hard-coded).

Model specs (``ffr d3s eval --model SPEC``):

- ``resnet50`` — torchvision, its DEFAULT weights, read from the torch hub cache (nothing downloads);
- ``resnet50:IMAGENET1K_V2`` — another weights entry of the same builder, from the cache;
- ``resnet50:/path/weights.pth`` — a state_dict file (local or ``s3://``), preprocessing of the DEFAULT weights;
- ``resnet50:random`` — random init with the DEFAULT weights' preprocessing (tests, pipeline checks);
- ``timm:vit_base_patch16_224[:/path/file]`` — timm (optional extra ``pip install timm``), weights from the
  HF/timm cache or a file, preprocessing from the model's ``pretrained_cfg``;
- ``checkpoint:/path/model.pt`` — a self-describing checkpoint ``{arch, num_classes, state_dict, preprocess}``
  (``arch`` = ``ffr/<backbone>`` or a torchvision name), e.g. the embedded D3S's plain-background CNN.

Preprocessing is a function PIL image → CHW float tensor, taken from torchvision's ``weights.transforms()``,
timm's data config, or the checkpoint's ``preprocess`` entry.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import Image
from torch import nn

from ffr.errors import FFRError
from ffr.storage import filesystem


@dataclass
class LoadedClassifier:
    name: str  # how tables call it
    module: nn.Module
    preprocess: Callable[[Image.Image], torch.Tensor]
    n_classes: int


def display_name(spec: str) -> str:
    """'checkpoint:/a/b/plain.pt' → 'plain'; 'resnet18:/w/r18.pth' → 'resnet18:r18'; names stay as they are."""
    kind, _, rest = spec.partition(":")
    if kind == "checkpoint":
        return os.path.splitext(os.path.basename(rest))[0]
    if kind == "timm":
        name, _, path = rest.partition(":")
        return f"timm:{name}" + (f":{os.path.splitext(os.path.basename(path))[0]}" if path else "")
    if rest and ("/" in rest or "." in rest):
        return f"{kind}:{os.path.splitext(os.path.basename(rest))[0]}"
    return spec


def _read_torch(path: str, what: str):
    fs, inner = filesystem(path)
    if not fs.exists(inner):
        raise FFRError(f"{what} {path!r} does not exist")
    with fs.open(inner, "rb") as f:
        return torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)


def _load_state(module: nn.Module, state: dict, where: str) -> None:
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        raise FFRError(f"weights {where!r} do not fit the model: {str(e).splitlines()[0]}") from None


def _torchvision(name: str, weights: str) -> LoadedClassifier:
    import torchvision

    if name not in torchvision.models.list_models(module=torchvision.models):
        raise FFRError(f"unknown torchvision classifier {name!r}; expected a name from "
                       "torchvision.models.list_models() (e.g. resnet50), 'timm:NAME' or 'checkpoint:PATH'")
    enum = torchvision.models.get_model_weights(name)
    default = enum.DEFAULT
    module = torchvision.models.get_model(name, weights=None)
    if weights in ("random", "DEFAULT"):
        chosen = default
    elif weights in enum.__members__:
        chosen = enum[weights]
    else:
        chosen = None
    if chosen is not None and weights != "random":
        cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(chosen.url))
        if not os.path.exists(cached):
            raise FFRError(f"weights {name}:{chosen.name} are not in the torch cache ({cached}); nothing downloads "
                           f"here: copy the file there or pass a path ('{name}:/path/weights.pth')")
        _load_state(module, torch.load(cached, map_location="cpu", weights_only=True), cached)
    elif chosen is None:
        _load_state(module, _read_torch(weights, "weights file"), weights)
        chosen = default
    label = name if weights in ("DEFAULT", default.name) else f"{name}:{weights}"
    return LoadedClassifier(display_name(label), module,
                            chosen.transforms(), len(chosen.meta["categories"]))


def _timm(rest: str) -> LoadedClassifier:
    try:
        import timm
        from timm.data import create_transform, resolve_data_config
    except ImportError:
        raise FFRError("timm models need the optional extra: pip install timm") from None
    name, _, path = rest.partition(":")
    overlay = {"file": path} if path else None
    try:
        module = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay)
    except Exception as e:  # noqa: BLE001 — a missing cache entry is the user's setup
        raise FFRError(f"timm model {name!r} cannot be loaded offline: {type(e).__name__}: "
                       f"{str(e).splitlines()[0] if str(e) else ''}") from None
    transform = create_transform(**resolve_data_config({}, model=module))
    return LoadedClassifier(display_name(f"timm:{rest}"), module, transform, int(module.num_classes))


def _checkpoint(path: str) -> LoadedClassifier:
    from torchvision import transforms as T

    ckpt = _read_torch(path, "checkpoint")
    missing = {"arch", "num_classes", "state_dict", "preprocess"} - set(ckpt if isinstance(ckpt, dict) else {})
    if missing:
        raise FFRError(f"checkpoint {path!r} lacks {sorted(missing)}; expected {{arch, num_classes, state_dict, "
                       "preprocess: {resize, crop, mean, std}}")
    arch, n = str(ckpt["arch"]), int(ckpt["num_classes"])
    if arch.startswith("ffr/"):
        from ffr.backbones import create_backbone

        module = create_backbone(arch[len("ffr/"):], n, **dict(ckpt.get("arch_options") or {}))
    else:
        import torchvision

        module = torchvision.models.get_model(arch, weights=None, num_classes=n)
    _load_state(module, ckpt["state_dict"], path)
    p = ckpt["preprocess"]
    transform = T.Compose([T.Resize(int(p["resize"])), T.CenterCrop(int(p["crop"])), T.ToTensor(),
                           T.Normalize(list(p["mean"]), list(p["std"]))])
    return LoadedClassifier(display_name(f"checkpoint:{path}"), module, transform, n)


def resolve_spec(spec: str, base: str | None = None) -> str:
    """A model spec with its weights path (``checkpoint:PATH``, ``timm:NAME:PATH``, ``resnet50:PATH``) made
    absolute against ``base`` (default: where the command runs), on the driver: the evaluation actors run in
    another working directory. Names and weight-enum names stay as they are."""
    from ffr.storage import absolute

    kind, _, rest = str(spec).partition(":")
    if kind == "checkpoint" and rest:
        return f"checkpoint:{absolute(rest, base)}"
    if kind == "timm":
        name, sep, path = rest.partition(":")
        return f"timm:{name}:{absolute(path, base)}" if sep and path else spec
    if rest and ("/" in rest or rest.endswith((".pt", ".pth"))):
        return f"{kind}:{absolute(rest, base)}"
    return spec


def load_classifier(spec: str) -> LoadedClassifier:
    """The classifier a spec names, in eval mode on the CPU (the caller moves it)."""
    kind, _, rest = str(spec).partition(":")
    if not kind:
        raise FFRError(f"model spec {spec!r} is empty; expected e.g. 'resnet50', 'timm:NAME' or 'checkpoint:PATH'")
    if kind == "timm":
        loaded = _timm(rest)
    elif kind == "checkpoint":
        loaded = _checkpoint(rest)
    else:
        loaded = _torchvision(kind, rest or "DEFAULT")
    loaded.module.eval()
    return loaded
