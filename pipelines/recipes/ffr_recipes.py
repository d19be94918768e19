"""FFR's three synthetic recipes (From Fake to Real, generation_code/generate_images_*.py), seed bugs fixed.

- ``ffr-celeba``: target Smiling × bias gender.
- ``ffr-utkface``: target gender × bias age (young / old).
- ``ffr-spuco-animals``: 4 animal classes × 4 backgrounds. The seed script overwrote its ``animal`` variable
  while reading the breed file, so every class was prompted with waterbird breeds; here each class uses
  its own breed list. Its "in {location}" also produced "in in the kitchen"; locations are full phrases here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ffr.groups import GroupSpec
from pipelines.recipes.base import RECIPES, Recipe, load_data, pick

_FACES = {"steps": 25, "guidance_scale": 7.5}  # FFR used 25 steps for faces, 50 for animals


@RECIPES.register("ffr-celeba")
class CelebASmiling(Recipe):
    """y = Smiling (0 not smiling, 1 smiling), b = gender; "a headshot of {gender} celebrity {expression}"."""

    name = "ffr-celeba"
    generator = _FACES
    gray_threshold = 1.5e6 / 512**2

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.words = load_data("ffr_faces.yaml")["celeba"]

    def spec(self) -> GroupSpec:
        return GroupSpec(("not smiling", "smiling"), tuple(g.lower() for g in self.words["genders"]))

    def row(self, y: int, b: int, rng: np.random.Generator) -> dict[str, Any]:
        expression = pick(rng, self.words["smiling"] if y == 1 else self.words["not_smiling"])
        return {"prompt": f"a headshot of {self.words['genders'][b]} celebrity {expression}"}


@RECIPES.register("ffr-utkface")
class UTKFaceGender(Recipe):
    """y = gender, b = age (0 young, 1 old); "a headshot of a human {gender} {age phrase}"."""

    name = "ffr-utkface"
    generator = _FACES
    gray_threshold = 1.5e6 / 512**2

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.words = load_data("ffr_faces.yaml")["utkface"]

    def spec(self) -> GroupSpec:
        return GroupSpec(tuple(g.lower() for g in self.words["genders"]), ("young", "old"))

    def row(self, y: int, b: int, rng: np.random.Generator) -> dict[str, Any]:
        age = pick(rng, self.words["young"] if b == 0 else self.words["old"])
        return {"prompt": f"a headshot of a human {self.words['genders'][y]} {age}"}


@RECIPES.register("ffr-spuco-animals")
class SpuCoAnimals(Recipe):
    """y ∈ {landbird, waterbird, small dog, big dog}, b ∈ {land, water, indoors, outdoors}."""

    name = "ffr-spuco-animals"
    generator = {"steps": 50, "guidance_scale": 7.5}

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        data = load_data("ffr_spuco_animals.yaml")
        self.breeds: dict[str, list[str]] = data["classes"]
        self.locations: dict[str, list[str]] = data["backgrounds"]

    def spec(self) -> GroupSpec:
        return GroupSpec(tuple(self.breeds), tuple(self.locations))

    def row(self, y: int, b: int, rng: np.random.Generator) -> dict[str, Any]:
        spec = self.spec()
        breed = pick(rng, self.breeds[spec.class_names[y]])
        location = pick(rng, self.locations[spec.bias_names[b]])
        return {"prompt": f"a photo of {breed} {location}"}
