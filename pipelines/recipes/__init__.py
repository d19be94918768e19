"""Recipes, one registry: a recipe turns a config into manifest rows (class/bias, prompt, guide refs).

Add a recipe: a module here with a ``@RECIPES.register("name")`` class (see base.py), imported below.
"""

from __future__ import annotations

from typing import Any

from pipelines.recipes import colored_digits, custom, d3s, ffr_recipes  # noqa: F401 — registers the recipes
from pipelines.recipes.base import GENERATOR_DEFAULTS, RECIPES, Recipe


def create(name: str, options: dict[str, Any] | None = None) -> Recipe:
    recipe = RECIPES.get(name)(options)
    recipe.check()
    return recipe


__all__ = ["create", "RECIPES", "Recipe", "GENERATOR_DEFAULTS"]
