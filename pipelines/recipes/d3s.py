"""D3S recipes: a class table (default ImageNet-1k) × a shift axis (priyathamkat/d3s, d3s/recipes/prompts/).

- ``d3s-background``: the 10 D3S backgrounds; D3S's prompt "a photo of a {class}, {definition}, {background}",
  with the class's first synonym and WordNet gloss from ``data/imagenet_classes.tsv``.
- ``d3s-geography``: 10 countries; "..., in {country}".  ``d3s-time``: 4 past and 2 future decades.
- ``d3s-background-templates``: the background templates themselves, text-to-image from each phrase (used by
  ``background_templates: N``; see :mod:`pipelines.background_templates`).

Guides (img2img, D3S's settings: strength 0.9, guidance 5, DDIM 50): ``foreground_root`` is an ImageNet-layout
folder (``train/n01440764/*.JPEG`` or class-index folders, local or ``s3://``); backgrounds come from
``background_root`` (one folder per label: ``grass/``, ``road/``, ...) or are generated once by the same
model (``background_templates: N`` per background) and stored under ``<output>/guides/``. Without guides the
rows are text-to-image (D3S's text-only settings: guidance 7.5).

Background assignment: ``uniform`` draws each image's background at random, as D3S did; ``stratified`` (the
default) gives every (class, background) cell the same count. Stratified is the default for rebuilds because
per-background accuracies are then averages over the same number of images of every class, so a drop between
two backgrounds is not confounded by which classes happened to land in which cell (with D3S's 120 images per
class, uniform cells range from about 4 to 20 images), and the correlated/anti-correlated splits keep every
class.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, Literal

import numpy as np

from ffr.errors import FFRError
from ffr.groups import GroupSpec
from ffr.options import Field, Options, PathField
from ffr.storage import join
from pipelines.guides import TEMPLATES_DIR, class_folders, list_images, template_ref
from pipelines.recipes.base import RECIPES, Recipe, load_data, pick
from pipelines.recipes.class_table import IMAGENET, load_class_table

ASSIGNMENTS = ("stratified", "uniform")  # D3SOptions.assignment
TEMPLATE_PROMPT = "a photo of an empty scene {phrase}"  # D3S never published how its templates were made


class D3SOptions(Options):
    classes: list[int] | None = Field(None, description="class indices to use (None: every class of the table)")
    class_table: str = PathField(IMAGENET, keep=(IMAGENET,), keep_prefixes=("data/",),
                                 description="'imagenet' (shipped), 'data/digit_classes.tsv', or a TSV path/URI")
    definitions: bool = Field(True, description="D3S's prompt carries the WordNet gloss; false leaves it out")
    assignment: Literal["stratified", "uniform"] = Field(
        "stratified", description="stratified: equal count per (class, background); uniform: D3S's random draw")
    foreground_root: str | None = PathField(None, description="img2img guides: root/{wnid or index}/*.JPEG")
    background_root: str | None = PathField(None, description="img2img guides: root/{background label}/*.jpg")
    background_templates: int = Field(0, ge=0, strict=True, description="N > 0: generate N templates per "
                                                                        "background with the run's backend")


class _D3S(Recipe):
    shift: str = "background"
    Options = D3SOptions
    gray_threshold = 0.0  # D3S kept gray images (snow, night); black outputs are still rejected

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        o = self.options
        self.axis = load_data("d3s_shifts.yaml")[self.shift]
        self.table = load_class_table(o.class_table)
        indices = list(range(len(self.table))) if o.classes is None else [int(c) for c in o.classes]
        bad = [c for c in indices if not 0 <= c < len(self.table)]
        if bad or not indices or len(set(indices)) != len(indices):
            raise FFRError(f"recipe.options.classes = {o.classes!r}; expected distinct class indices in "
                           f"0..{len(self.table) - 1}")
        if o.background_root and o.background_templates:
            raise FFRError("recipe.options.background_root and background_templates are exclusive; expected a "
                           "folder of templates per background OR a number of templates to generate")
        has_bg = bool(o.background_root or o.background_templates)
        if bool(o.foreground_root) != has_bg:
            raise FFRError("d3s img2img guides need both recipe.options.foreground_root and background_root "
                           "(or background_templates), or neither for text-to-image")
        self.class_indices = indices
        self.class_names = tuple(self.table.names[c] for c in indices)
        self.guided = bool(o.foreground_root)
        self.generator = ({"mode": "img2img", "strength": 0.9, "guidance_scale": 5.0, "steps": 50}
                          if self.guided else {"mode": "t2i", "guidance_scale": 7.5, "steps": 50})

    @cached_property
    def _guide_files(self) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
        """Foreground files per class, background files per bias — listed once, on the driver."""
        o = self.options
        folders = class_folders(o.foreground_root, self.table.wnids)
        fg: dict[int, list[str]] = {}
        for y, c in enumerate(self.class_indices):
            if c not in folders:
                raise FFRError(f"foreground folder {o.foreground_root!r} has no folder for class {c} "
                               f"({self.table.wnids[c]} or {c}: {self.table.names[c]!r})")
            fg[y] = list_images(folders[c], f"foreground (class {c})")
        labels = list(self.axis["values"])
        if o.background_templates:  # generated before the images, at fixed names relative to the output root
            bg = {b: [template_ref(label, k) for k in range(o.background_templates)] for b, label in enumerate(labels)}
        else:
            bg = {b: list_images(join(o.background_root, label), f"background template ({label!r})")
                  for b, label in enumerate(labels)}
        return fg, bg

    def check(self) -> None:
        if self.guided:
            self._guide_files  # noqa: B018 — lists the folders now so bad paths fail before any work

    def spec(self) -> GroupSpec:
        return GroupSpec(self.class_names, tuple(self.axis["values"]))

    def assign_budgets(self, budgets: dict[tuple[int, int], int], run_seed: int) -> dict[tuple[int, int], int]:
        """``uniform``: keep each class's total and draw every image's background uniformly (seeded)."""
        if self.options.assignment == "stratified":
            return budgets
        n_bias = self.spec().n_bias
        out = {}
        for y in range(self.spec().n_classes):
            total = sum(budgets.get((y, b), 0) for b in range(n_bias))
            draws = np.random.default_rng([int(run_seed), y, 3]).integers(0, n_bias, size=total)
            counts = np.bincount(draws, minlength=n_bias)
            out.update({(y, b): int(counts[b]) for b in range(n_bias)})
        return out

    def preparation_images(self) -> tuple[str, int, dict[str, Any]] | None:
        n = self.options.background_templates
        if not n:
            return None
        return ("background templates", n * len(self.axis["values"]), D3SBackgroundTemplates.generator)

    def prepare(self, cfg: Any) -> dict[str, Any] | None:
        if not self.options.background_templates:
            return None
        from pipelines.background_templates import ensure_templates  # runs a generation job: import lazily

        return ensure_templates(cfg, self)

    def row(self, y: int, b: int, rng: np.random.Generator) -> dict[str, Any]:
        label = list(self.axis["values"])[b]
        c = self.class_indices[y]
        definition = self.table.definitions[c] if self.options.definitions else ""
        words = {"class_name": self.class_names[y], "definition": f", {definition}" if definition else "",
                 "phrase": self.axis["values"][label], "style": self.axis.get("styles", {}).get(label, "")}
        out: dict[str, Any] = {"prompt": self.axis["template"].format(**words), "class_index": c,
                               "wnid": self.table.wnids[c]}
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


@RECIPES.register("d3s-background-templates")
class D3SBackgroundTemplates(Recipe):
    """One class ('scene') × the 10 backgrounds, text-to-image from the phrase (D3S's text-only settings)."""

    name = "d3s-background-templates"
    generator = {"mode": "t2i", "guidance_scale": 7.5, "steps": 50}
    gray_threshold = 0.0

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.axis = load_data("d3s_shifts.yaml")["background"]

    def spec(self) -> GroupSpec:
        return GroupSpec(("scene",), tuple(self.axis["values"]))

    def row(self, y: int, b: int, rng: np.random.Generator) -> dict[str, Any]:
        label = list(self.axis["values"])[b]
        return {"prompt": TEMPLATE_PROMPT.format(phrase=self.axis["values"][label])}


__all__ = ["ASSIGNMENTS", "TEMPLATES_DIR", "D3SOptions"]
