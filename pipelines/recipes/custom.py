"""``custom``: a user's own dataset as classes × attributes × prompt templates, from YAML.

Options (inline under ``recipe.options`` or in a YAML file named by ``recipe.options.file``)::

    classes: [cat, dog]                       # class names (y)
    attributes: [indoors, outdoors]           # bias names (b)
    templates: ["a photo of a {class} {attribute}"]
    class_phrases: {dog: [a beagle, a husky]}            # optional: words used for {class}
    attribute_phrases: {indoors: [in a kitchen, on a sofa]}  # optional: words used for {attribute}
    negative_prompt: "blurry, low quality"

A template, a class phrase and an attribute phrase are drawn per image from the row's seeded generator.
"""

from __future__ import annotations

import string
from typing import Annotated, Any

import numpy as np
from pydantic import StringConstraints

from ffr.config import read_yaml_mapping
from ffr.errors import FFRError
from ffr.groups import GroupSpec
from ffr.options import Field, Options, PathField
from pipelines.recipes.base import RECIPES, Recipe, pick

PLACEHOLDERS = {"class", "attribute"}
_Text = Annotated[str, StringConstraints(min_length=1)]


class CustomOptions(Options):
    file: str | None = PathField(None, description="a YAML file holding these keys (inline keys override it)")
    classes: list[_Text] = Field(min_length=1, description="class names (y)")
    attributes: list[_Text] = Field(min_length=1, description="bias names (b)")
    templates: list[_Text] = Field(min_length=1, description="prompt templates with {class} and {attribute}")
    class_phrases: dict[str, list[_Text]] = Field({}, description="words used for {class}, per class")
    attribute_phrases: dict[str, list[_Text]] = Field({}, description="words used for {attribute}, per attribute")
    negative_prompt: str = Field("", description="every row's negative prompt (or generator.negative_prompt)")
    gray_threshold: float = Field(2e5 / 512**2, ge=0, description="grayscale filter per pixel; 0 = off")


def _load_file(path: str) -> dict[str, Any]:
    return read_yaml_mapping(path, "custom recipe file")


@RECIPES.register("custom")
class CustomRecipe(Recipe):
    name = "custom"
    Options = CustomOptions

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        options = dict(options or {})
        if options.get("file"):
            merged = _load_file(str(options["file"]))
            merged.update({k: v for k, v in options.items() if k != "file"})
            options = merged
        super().__init__(options)
        o = self.options
        for template in o.templates:
            try:
                names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
            except ValueError as e:
                raise FFRError(f"custom recipe template {template!r} is malformed: {e}") from None
            if names - PLACEHOLDERS:
                raise FFRError(f"custom recipe template {template!r} uses {sorted(names - PLACEHOLDERS)}; "
                               f"expected only {{class}} and {{attribute}}")
        for key, names in (("class_phrases", o.classes), ("attribute_phrases", o.attributes)):
            extra = sorted(set(getattr(o, key)) - set(names))
            if extra:
                raise FFRError(f"custom recipe {key} names {extra[0]!r}, which is not one of {names}")
        self.gray_threshold = o.gray_threshold

    def spec(self) -> GroupSpec:
        return GroupSpec(tuple(self.options.classes), tuple(self.options.attributes))

    def row(self, y: int, b: int, rng: np.random.Generator) -> dict[str, Any]:
        o = self.options
        cls, attr = o.classes[y], o.attributes[b]
        template = pick(rng, o.templates)
        words = {"class": pick(rng, o.class_phrases.get(cls) or [cls]),
                 "attribute": pick(rng, o.attribute_phrases.get(attr) or [attr])}
        return {"prompt": template.format(**words), "negative_prompt": o.negative_prompt}

