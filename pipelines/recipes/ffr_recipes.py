"""FFR's three synthetic recipes (From Fake to Real, generation_code/generate_images_*.py), seed bugs fixed.

- ``ffr-celeba``: target Smiling × bias gender.
- ``ffr-utkface``: target gender × bias age (young / old).
- ``ffr-spuco-animals``: 4 animal classes × 4 backgrounds. The seed script overwrote its ``animal`` variable
  while reading the breed file, so every class was prompted with waterbird breeds; here each class uses
  its own breed list. Its "in {location}" also produced "in in the kitchen"; locations are full phrases here.

Synthetic and real rows are mixed by (y, b), so each recipe's groups are its real dataset's: the class and bias
names and their order come from the reader module (ffr/datasets/celeba_hq.py, utk_face.py, spuco_animals.py),
imported when the recipe is built (the readers pull in torch, which other recipes and the actors never need).
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar

import numpy as np

from ffr.errors import FFRError
from ffr.groups import GroupSpec
from pipelines.recipes.base import RECIPES, Recipe, load_data, pick

_FACES = {"steps": 25, "guidance_scale": 7.5}  # FFR used 25 steps for faces, 50 for animals


class _RealGroups(Recipe):
    """A recipe for a real dataset's groups: ``reader`` names the ffr.datasets module that defines them
    (``CLASS_NAMES``, ``BIAS_NAMES``, and ``POPULATED_GROUPS`` where some (class, bias) pairs do not exist)."""

    reader: ClassVar[str] = ""

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        module = importlib.import_module(f"ffr.datasets.{self.reader}")
        self.groups = GroupSpec(module.CLASS_NAMES, module.BIAS_NAMES,
                                populated=getattr(module, "POPULATED_GROUPS", None))

    def spec(self) -> GroupSpec:
        return self.groups


@RECIPES.register("ffr-celeba")
class CelebASmiling(_RealGroups):
    """y = Smiling (0 not smiling, 1 smiling), b = gender (0 Female, 1 Male); "a headshot of {gender} celebrity ..."."""

    name = "ffr-celeba"
    reader = "celeba_hq"
    generator = _FACES
    gray_threshold = 1.5e6 / 512**2

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.words = load_data("ffr_faces.yaml")["celeba"]

    def row(self, y: int, b: int, rng: np.random.Generator) -> dict[str, Any]:
        expression = pick(rng, self.words["smiling"] if y == 1 else self.words["not_smiling"])
        return {"prompt": f"a headshot of {self.groups.bias_names[b]} celebrity {expression}"}


@RECIPES.register("ffr-utkface")
class UTKFaceGender(_RealGroups):
    """y = gender (0 Male, 1 Female), b = age (0 old, 1 young); "a headshot of a human {gender} {age phrase}"."""

    name = "ffr-utkface"
    reader = "utk_face"
    generator = _FACES
    gray_threshold = 1.5e6 / 512**2

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.words = _words_per_name(load_data("ffr_faces.yaml")["utkface"], self.groups.bias_names, "ffr_faces.yaml")

    def row(self, y: int, b: int, rng: np.random.Generator) -> dict[str, Any]:
        age = pick(rng, self.words[self.groups.bias_names[b]])
        return {"prompt": f"a headshot of a human {self.groups.class_names[y]} {age}"}


@RECIPES.register("ffr-spuco-animals")
class SpuCoAnimals(_RealGroups):
    """y ∈ {landbird, waterbird, small_dog, big_dog}, b ∈ {land, water, indoors, outdoors}."""

    name = "ffr-spuco-animals"
    reader = "spuco_animals"
    generator = {"steps": 50, "guidance_scale": 7.5}

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        data = load_data("ffr_spuco_animals.yaml")
        self.breeds = _words_per_name(data["classes"], self.groups.class_names, "ffr_spuco_animals.yaml")
        self.locations = _words_per_name(data["backgrounds"], self.groups.bias_names, "ffr_spuco_animals.yaml")

    def row(self, y: int, b: int, rng: np.random.Generator) -> dict[str, Any]:
        breed = pick(rng, self.breeds[self.groups.class_names[y]])
        location = pick(rng, self.locations[self.groups.bias_names[b]])
        return {"prompt": f"a photo of {breed} {location}"}


def _words_per_name(words: dict[str, list[str]], names: tuple[str, ...], source: str) -> dict[str, list[str]]:
    """A shipped word list keyed by the dataset's group names; a name without words is a packaging bug."""
    missing = [n for n in names if not words.get(n)]
    if missing:
        raise FFRError(f"recipe word list {source!r} has no words for {missing}; expected one list per name")
    return words
