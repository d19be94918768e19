"""Classifiers to evaluate, by name, with the preprocessing their own weights declare (never hard-coded).

Model specs (``ffr d3s eval --model SPEC``; ``ffr d3s eval --list-models`` prints the families below):

- ``resnet50`` — torchvision, its DEFAULT weights, read from the torch hub cache (nothing downloads);
- ``resnet50:IMAGENET1K_V2`` — another weights entry of the same builder, from the cache;
- ``resnet50:/path/weights.pth`` — a state_dict file (local or ``s3://``), preprocessing of the DEFAULT weights;
- ``resnet50:random`` — random init with the DEFAULT weights' preprocessing (tests, pipeline checks);
- ``timm:convnext_tiny.fb_in22k_ft_in1k[:/path/file|:random]`` — timm (extra ``pip install 'ffr-synth[timm]'``):
  CNNs, ViTs, DINO/robust fine-tunes with an ImageNet head; weights from the HF cache or a file, preprocessing
  from the model's ``pretrained_cfg`` (its own input size, crop, interpolation, mean and std);
- ``clip:openai/clip-vit-base-patch32`` (a hub id in the HF cache, a local folder or an ``s3://`` prefix) —
  CLIP zero-shot through transformers' CLIPModel: one text embedding per class of the class table from
  "a photo of a {class}." (or the ``--clip-template`` prompts, averaged), logits = scaled cosine similarity;
  preprocessing from the model's own image processor config;
- ``checkpoint:PATH`` — what ``ffr train`` writes: a run directory (its best checkpoint by validation WGA), one of
  its ``checkpoint_epochNNNN`` directories, or a ``model.pt`` file. The checkpoint describes itself (backbone,
  backbone options, class names, preprocessing: :func:`ffr.backbones.describe`); the embedded D3S's older
  ``{arch, num_classes, state_dict, preprocess}`` files are read too.

Preprocessing is a function PIL image → CHW float tensor, taken from torchvision's ``weights.transforms()``,
timm's data config, CLIP's image processor config, or the checkpoint's own preprocessing.
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
from ffr.registry import Registry
from ffr.runs import CHECKPOINT_FILE, CHECKPOINT_PREFIX, RESULT, run_checkpoint
from ffr.storage import filesystem, join

DEFAULT_TEMPLATES = ("a photo of a {class}.",)


@dataclass
class LoadedClassifier:
    name: str  # how tables call it
    module: nn.Module
    preprocess: Callable[[Image.Image], torch.Tensor]
    n_classes: int


def display_name(spec: str) -> str:
    """'checkpoint:/a/b/plain.pt' → 'plain'; 'checkpoint:/runs/RUN' and 'checkpoint:/runs/RUN/checkpoint_epoch0003/
    model.pt' → 'RUN' and 'RUN/checkpoint_epoch0003'; 'resnet18:/w/r18.pth' → 'resnet18:r18'; names stay."""
    kind, _, rest = spec.partition(":")
    if kind == "checkpoint":
        parts = rest.rstrip("/").split("/")
        stem, ext = os.path.splitext(parts[-1])
        if ext in (".pt", ".pth", ".ckpt"):  # a file; a directory keeps its whole name (a run name may hold dots)
            parts[-1] = stem
        if parts[-1] == os.path.splitext(CHECKPOINT_FILE)[0] and len(parts) > 1:  # ffr train's: named by its run
            parts.pop()
        if parts[-1].startswith(CHECKPOINT_PREFIX) and len(parts) > 1:
            return "/".join(parts[-2:])
        return parts[-1]
    if kind == "timm":
        name, _, path = rest.partition(":")
        return f"timm:{name}" + (f":{os.path.splitext(os.path.basename(path))[0]}" if path else "")
    if kind == "clip":
        return f"clip:{os.path.basename(rest.rstrip('/')) if '/' in rest and rest.count('/') != 1 else rest}"
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
        raise FFRError("timm models need the optional extra: pip install 'ffr-synth[timm]'") from None
    name, _, path = rest.partition(":")
    if not name:
        raise FFRError("model spec 'timm:' names no model; expected timm:NAME[:PATH|:random], e.g. timm:resnet50")
    random = path == "random"
    overlay = {"file": path} if path and not random else None
    try:
        module = timm.create_model(name, pretrained=not random, pretrained_cfg_overlay=overlay)
    except Exception as e:  # noqa: BLE001 — a missing cache entry or an unknown name is the user's setup
        raise FFRError(f"timm model {name!r} cannot be loaded offline: {type(e).__name__}: "
                       f"{str(e).splitlines()[0] if str(e) else ''}") from None
    # The model's own pretrained_cfg (set with random weights too): input size, crop, interpolation, mean, std.
    transform = create_transform(**resolve_data_config({}, model=module))
    return LoadedClassifier(display_name(f"timm:{rest}"), module, transform, int(module.num_classes))


class CLIPZeroShot(nn.Module):
    """CLIP as a classifier: logits = logit_scale · cos(image embedding, class text embedding), with one text
    embedding per class averaged over the prompt templates (CLIP's prompt ensembling), computed once."""

    def __init__(self, model, tokenizer, class_names: tuple[str, ...], templates: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        with torch.inference_mode():
            per_template = []
            for template in templates:
                prompts = [template.replace("{class}", name) for name in class_names]
                tokens = tokenizer(prompts, padding=True, truncation=True, return_tensors="pt")
                features = model.get_text_features(**tokens)
                features = getattr(features, "pooler_output", features)
                per_template.append(torch.nn.functional.normalize(features, dim=-1))
            text = torch.nn.functional.normalize(torch.stack(per_template).mean(0), dim=-1)
        self.register_buffer("text", text.clone())
        self.scale = float(model.logit_scale.detach().exp())

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        features = self.model.get_image_features(pixel_values=pixel_values)
        features = getattr(features, "pooler_output", features)
        image = torch.nn.functional.normalize(features, dim=-1)
        return self.scale * image @ self.text.to(image.dtype).T


def _clip_transform(processor) -> Callable[[Image.Image], torch.Tensor]:
    """The CLIP image processor's own resize / center crop / normalization as a torchvision transform."""
    from torchvision import transforms as T

    size = processor.size.get("shortest_edge") or min(processor.size["height"], processor.size["width"])
    crop = processor.crop_size
    modes = {0: T.InterpolationMode.NEAREST, 2: T.InterpolationMode.BILINEAR, 3: T.InterpolationMode.BICUBIC}
    mode = modes.get(int(processor.resample), T.InterpolationMode.BICUBIC)  # PIL's resample codes
    return T.Compose([T.Resize(int(size), interpolation=mode),
                      T.CenterCrop((int(crop["height"]), int(crop["width"]))), T.ToTensor(),
                      T.Normalize(list(processor.image_mean), list(processor.image_std))])


def _clip(rest: str, class_names: tuple[str, ...] = (), templates: tuple[str, ...] = ()) -> LoadedClassifier:
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    from pipelines.model_source import resolve_model

    if not rest:
        raise FFRError("model spec 'clip:' names no model; expected clip:HUB_ID, clip:/local/dir or clip:s3://...")
    if not class_names:
        raise FFRError(f"CLIP zero-shot model {rest!r} needs class names; expected a class table")
    templates = tuple(templates) or DEFAULT_TEMPLATES
    bad = [t for t in templates if "{class}" not in t]
    if bad:
        raise FFRError(f"CLIP prompt template {bad[0]!r} has no {{class}}; expected e.g. 'a photo of a {{class}}.'")
    where = resolve_model(rest)
    try:
        model = CLIPModel.from_pretrained(where)
        tokenizer = AutoTokenizer.from_pretrained(where)
        processor = CLIPImageProcessor.from_pretrained(where)
    except OSError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FFRError(f"CLIP model {rest!r} cannot be loaded offline: {first}") from None
    model.eval()
    head = CLIPZeroShot(model, tokenizer, tuple(class_names), templates)
    return LoadedClassifier(display_name(f"clip:{rest}"), head, _clip_transform(processor), len(class_names))


def _checkpoint_file(path: str) -> str:
    """``checkpoint:PATH`` → the file to read: PATH itself (``model.pt``, a ``.pt`` file), a checkpoint
    directory's ``model.pt``, or a finished ``ffr train`` run directory's best checkpoint."""
    fs, inner = filesystem(path)
    if fs.isfile(inner):
        return path
    found = run_checkpoint(path) if fs.isdir(inner) else None
    if found is None:
        raise FFRError(f"checkpoint {path!r} is neither a checkpoint file, a checkpoint directory (with "
                       f"{CHECKPOINT_FILE}) nor a finished `ffr train` run directory (with {RESULT})")
    return join(found, CHECKPOINT_FILE)


def _d3s_checkpoint(ckpt: dict, path: str) -> tuple[nn.Module, Callable, int]:
    """The embedded D3S's checkpoint format before checkpoints shared ``ffr train``'s: ``{arch, arch_options,
    num_classes, state_dict, preprocess: {resize, crop, mean, std}}`` (``arch``: ``ffr/<backbone>`` or a
    torchvision name)."""
    from torchvision import transforms as T

    missing = {"arch", "num_classes", "state_dict", "preprocess"} - set(ckpt)
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
    return module, transform, n


def _checkpoint(path: str, class_names: tuple[str, ...] = ()) -> LoadedClassifier:
    """A self-describing checkpoint: what ``ffr train`` writes (the model's weights beside its backbone, options,
    class names and preprocessing, :func:`ffr.backbones.describe`; a run directory gives its best one), or the
    embedded D3S's older format. ``class_names``: the class table's; a model with another class count is refused
    (its class indices would be read as the table's)."""
    ckpt = _read_torch(_checkpoint_file(path), "checkpoint")
    if not isinstance(ckpt, dict):
        raise FFRError(f"checkpoint {path!r} does not hold a dict; expected `ffr train`'s model.pt")
    if "arch" in ckpt:
        module, transform, n = _d3s_checkpoint(ckpt, path)
        names = tuple(str(c) for c in ckpt.get("categories") or ())
    else:
        from ffr.backbones import from_checkpoint

        described = from_checkpoint(ckpt, path)
        module, transform, n = described.model, described.preprocessing.transform(), len(described.class_names)
        names = described.class_names
    if class_names and len(class_names) != n:
        shown = f" ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})" if names else ""
        raise FFRError(f"checkpoint {path!r} predicts {n} classes{shown}, but the class table has "
                       f"{len(class_names)}; expected --class-table to list the classes the model was trained on, "
                       "in its order")
    return LoadedClassifier(display_name(f"checkpoint:{path}"), module, transform, n)


@dataclass(frozen=True)
class ModelFamily:
    name: str
    syntax: str
    description: str
    load: Callable[[str, tuple[str, ...], tuple[str, ...]], LoadedClassifier]  # (spec, class names, templates)


def _after_prefix(spec: str) -> str:
    return spec.partition(":")[2]


# Every kind of classifier `ffr d3s eval` can evaluate; `--list-models` prints this table.
MODEL_FAMILIES: Registry[ModelFamily] = Registry("classifier family")
for _family in (
    ModelFamily("torchvision", "NAME[:WEIGHTS|:PATH|:random]", "torchvision classifiers (resnet50, vit_b_16, "
                "convnext_tiny...); weights from the torch hub cache or a file",
                lambda spec, *_: _torchvision(spec.partition(":")[0], spec.partition(":")[2] or "DEFAULT")),
    ModelFamily("timm", "timm:NAME[:PATH|:random]", "timm CNNs and ViTs (DINO, robust and in22k fine-tunes with an "
                "ImageNet head); weights from the HF cache or a file; pip install 'ffr-synth[timm]'",
                lambda spec, *_: _timm(_after_prefix(spec))),
    ModelFamily("clip", "clip:HUB_ID|DIR|s3://PREFIX", "CLIP zero-shot over the class table ('a photo of a "
                "{class}.', --clip-template to change or ensemble), transformers' CLIPModel",
                lambda spec, names, templates: _clip(_after_prefix(spec), names, templates)),
    ModelFamily("checkpoint", "checkpoint:PATH", "an `ffr train` run directory (its best checkpoint), a checkpoint "
                "directory or a model.pt file: backbone, options, classes and preprocessing travel with the weights",
                lambda spec, names, _: _checkpoint(_after_prefix(spec), names)),
):
    MODEL_FAMILIES.register(_family.name)(_family)


def family_of(spec: str) -> str:
    kind = str(spec).partition(":")[0]
    return kind if kind in MODEL_FAMILIES and kind != "torchvision" else "torchvision"


def list_families() -> str:
    """The families, their spec syntax and what they are: what ``ffr d3s eval --list-models`` prints."""
    rows = [(f.name, f.syntax, f.description) for f in map(MODEL_FAMILIES.get, MODEL_FAMILIES.names())]
    width = [max(len(r[i]) for r in rows) for i in range(2)]
    return "\n".join(f"{n.ljust(width[0])}  {s.ljust(width[1])}  {d}" for n, s, d in rows)


def resolve_spec(spec: str, base: str | None = None) -> str:
    """A model spec with its weights path (``checkpoint:PATH``, ``timm:NAME:PATH``, ``resnet50:PATH``) made
    absolute against ``base`` (default: where the command runs), on the driver: the evaluation actors run in
    another working directory. Names and weight-enum names stay as they are."""
    from ffr.storage import absolute

    kind, _, rest = str(spec).partition(":")
    if kind == "checkpoint" and rest:
        return f"checkpoint:{absolute(rest, base)}"
    if kind == "clip":  # a hub id (org/name) stays; a local directory is made absolute
        return f"clip:{absolute(rest, base)}" if rest and os.path.isdir(absolute(rest, base)) else spec
    if kind == "timm":
        name, sep, path = rest.partition(":")
        return f"timm:{name}:{absolute(path, base)}" if sep and path and path != "random" else spec
    if rest and rest != "random" and ("/" in rest or rest.endswith((".pt", ".pth"))):
        return f"{kind}:{absolute(rest, base)}"
    return spec


def load_classifier(spec: str, class_names: tuple[str, ...] = (),
                    templates: tuple[str, ...] = ()) -> LoadedClassifier:
    """The classifier a spec names, in eval mode on the CPU (the caller moves it). ``class_names`` (the class
    table's) and ``templates`` are what a zero-shot family (clip) builds its head from."""
    if not str(spec).partition(":")[0]:
        raise FFRError(f"model spec {spec!r} is empty; expected e.g. 'resnet50', 'timm:NAME', 'clip:MODEL' or "
                       "'checkpoint:PATH' (ffr d3s eval --list-models)")
    loaded = MODEL_FAMILIES.get(family_of(spec)).load(str(spec), tuple(class_names), tuple(templates))
    loaded.module.eval()
    return loaded
