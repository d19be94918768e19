"""The contract every recipe follows (one registry: ``pipelines.recipes.create(name, options)``).

A recipe knows a dataset's groups (class × bias names) and how to write one prompt for a group. It is
plain Python: no Ray, no torch. Randomness (which breed, which location phrase, which guide file) comes
only from the ``numpy.random.Generator`` it is handed, which the manifest seeds from the row's id, so the
same config always gives the same manifest.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ffr.config import load_yaml
from ffr.groups import GroupSpec
from ffr.options import NoOptions, Options
from ffr.registry import Registry
from pipelines.config import check_places

RECIPES: Registry = Registry("recipe", plugins="ffr.recipes")

# What to make: the generator settings every manifest row carries; a recipe overrides the ones its paper used and
# the config's generator section overrides the recipe (backend settings only say how to run).
GENERATOR_DEFAULTS: dict[str, Any] = {
    "mode": "t2i",  # "t2i" (text to image) or "img2img" (needs guide_foreground/guide_background)
    "steps": 50,
    "guidance_scale": 7.5,
    "strength": 1.0,
    "height": 512,
    "width": 512,
}


class Recipe:
    """Subclasses set ``name``, ``Options`` (an ffr.options model of ``recipe.options``) and implement spec/row."""

    name: ClassVar[str] = ""
    Options: ClassVar[type[Options]] = NoOptions
    generator: ClassVar[dict[str, Any]] = {}
    default_backend: ClassVar[str] = "diffusers"
    # FFR's grayscale rule, per pixel: FFR's raw thresholds were sums over a 512×512 image
    # (1.5e6 for faces, 2e5 for animals) → divided by 512² here so any image size works. 0 turns it off.
    gray_threshold: ClassVar[float] = 2e5 / 512**2

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        check_places(options, "recipe.options", accepted=tuple(self.Options.model_fields))
        self.options = RECIPES.options(self.name, options, "recipe.options")

    def check(self) -> None:
        """Validate paths and inputs up front, so a bad path fails before any image is generated."""

    def spec(self) -> GroupSpec:
        raise NotImplementedError

    def row(self, y: int, b: int, rng: np.random.Generator) -> dict[str, Any]:
        """Prompt fields for one image of group (y, b): ``prompt``, optional ``negative_prompt`` and extras."""
        raise NotImplementedError

    def assign_budgets(self, budgets: dict[tuple[int, int], int], run_seed: int) -> dict[tuple[int, int], int]:
        """Images per group as the recipe assigns them (D3S's ``uniform`` option redraws each image's bias)."""
        return budgets

    def prepare(self, cfg: Any) -> dict[str, Any] | None:
        """Work needed before the images, once per output (D3S: generate the background templates)."""
        return None

    def preparation_images(self) -> tuple[str, int, dict[str, Any]] | None:
        """What :meth:`prepare` generates, for cost previews: (what, how many images, generator settings)."""
        return None

    def generator_settings(self) -> dict[str, Any]:
        return {**GENERATOR_DEFAULTS, **self.generator}


def pick(rng: np.random.Generator, options: list[str] | tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def load_data(name: str) -> dict:
    """A word list shipped under pipelines/recipes/data/."""
    from importlib import resources

    return load_yaml(resources.files("pipelines.recipes").joinpath("data", name).read_text())
