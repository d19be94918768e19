"""D3S recipes: ImageNet-1k classes × a shift axis (priyathamkat/d3s, d3s/recipes/prompts/).

- ``d3s-background``: the 10 D3S backgrounds; prompt "a photo of a {class}, {definition}, {background}".
- ``d3s-geography``: 10 countries; "..., in {country}".
- ``d3s-time``: 4 past and 2 future decades; "an old / a futuristic color photo of a {class}, ..., from the 1950s".

Class names are torchvision's ImageNet category list (offline, no weights). ``definition`` comes from an
optional JSON dictionary ``{class index or class name: gloss}``; without one the prompt leaves it out.
With ``foreground_root`` (ImageNet layout) and ``background_root`` (one folder per bias label, e.g.
``background_root/grass/*.jpg``) rows become img2img with D3S's guide and settings (strength 0.9,
guidance 5, 50 steps); without them they are text-to-image (D3S used guidance 7.5 there).
Unlike D3S, backgrounds are not drawn at random per image: the budget gives every (class, background)
group its count, so the set is balanced by construction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from ffr.errors import FFRError
from ffr.groups import GroupSpec
from ffr.storage import filesystem, join
from pipelines.guides import class_folders, list_images
from pipelines.recipes.base import RECIPES, Recipe, load_data, pick


def imagenet_classes() -> tuple[str, ...]:
    from torchvision.models import ResNet50_Weights

    return tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


@dataclass
class D3SOptions:
    classes: list[int] | None = None  # ImageNet class indices to use (default: all 1000)
    dictionary: str | None = None  # JSON {index or name: definition}
    foreground_root: str | None = None  # ImageNet layout: root/{wnid or index}/*.JPEG
    background_root: str | None = None  # root/{bias label}/*.jpg
    wnids_file: str | None = None  # one wnid per line in class order, for a partial wnid-named root


class _D3S(Recipe):
    shift: str = "background"
    Options = D3SOptions
    gray_threshold = 0.0  # D3S kept gray images (snow, night); black outputs are still rejected

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        o = self.options
        self.axis = load_data("d3s_shifts.yaml")[self.shift]
        names = imagenet_classes()
        indices = list(range(len(names))) if o.classes is None else [int(c) for c in o.classes]
        bad = [c for c in indices if not 0 <= c < len(names)]
        if bad or not indices or len(set(indices)) != len(indices):
            raise FFRError(f"recipe.options.classes = {o.classes!r}; expected distinct ImageNet indices in 0..999")
        self.class_indices = indices
        self.class_names = tuple(names[c] for c in indices)
        self.definitions = self._load_dictionary(o.dictionary) if o.dictionary else {}
        if bool(o.foreground_root) != bool(o.background_root):
            raise FFRError("d3s img2img guides need both recipe.options.foreground_root and background_root "
                           "(or neither, for text-to-image)")
        self.guided = bool(o.foreground_root)
        self.generator = ({"mode": "img2img", "strength": 0.9, "guidance_scale": 5.0, "steps": 50}
                          if self.guided else {"mode": "t2i", "guidance_scale": 7.5, "steps": 50})

    def _load_dictionary(self, path: str) -> dict[int, str]:
        fs, inner = filesystem(path)
        if not fs.exists(inner):
            raise FFRError(f"definition dictionary {path!r} does not exist")
        try:
            raw = json.loads(fs.cat_file(inner))
        except json.JSONDecodeError as e:
            raise FFRError(f"definition dictionary {path!r} is not valid JSON: {e}") from None
        if not isinstance(raw, dict):
            raise FFRError(f"definition dictionary {path!r} must map class index or name to a definition")
        all_names = imagenet_classes()
        by_name = {n: i for i, n in enumerate(all_names)}
        out = {}
        for key, value in raw.items():
            idx = int(key) if str(key).isdigit() else by_name.get(str(key))
            if idx is not None:
                out[idx] = str(value)
        return out

    @cached_property
    def _guide_files(self) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
        """Foreground files per class, background files per bias — listed once, on the driver."""
        o = self.options
        folders = class_folders(o.foreground_root, len(imagenet_classes()), o.wnids_file)
        fg: dict[int, list[str]] = {}
        for y, c in enumerate(self.class_indices):
            if c not in folders:
                raise FFRError(f"foreground folder {o.foreground_root!r} has no folder for class {c} "
                               f"({imagenet_classes()[c]!r})")
            fg[y] = list_images(folders[c], f"foreground (class {c})")
        bg = {b: list_images(join(o.background_root, label), f"background template ({label!r})")
              for b, label in enumerate(self.axis["values"])}
        return fg, bg

    def check(self) -> None:
        if self.guided:
            self._guide_files  # noqa: B018 — lists the folders now so bad paths fail before any work

    def spec(self) -> GroupSpec:
        return GroupSpec(self.class_names, tuple(self.axis["values"]))

    def row(self, y: int, b: int, rng: np.random.Generator) -> dict[str, Any]:
        label = list(self.axis["values"])[b]
        definition = self.definitions.get(self.class_indices[y])
        words = {"class_name": self.class_names[y], "definition": f", {definition}" if definition else "",
                 "phrase": self.axis["values"][label], "style": self.axis.get("styles", {}).get(label, "")}
        out: dict[str, Any] = {"prompt": self.axis["template"].format(**words), "imagenet_class": self.class_indices[y]}
        if self.guided:
            fg, bg = self._guide_files
            out["guide_foreground"] = pick(rng, fg[y])
            out["guide_background"] = pick(rng, bg[b])
        return out


@RECIPES.register("d3s-background")
class D3SBackground(_D3S):
    name = "d3s-background"
    shift = "background"


@RECIPES.register("d3s-geography")
class D3SGeography(_D3S):
    name = "d3s-geography"
    shift = "geography"


@RECIPES.register("d3s-time")
class D3STime(_D3S):
    name = "d3s-time"
    shift = "time"
