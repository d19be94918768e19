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

# Class/bias names and their index order are those of the real-data readers (ffr/datasets/celeba_hq.py,
# utk_face.py, spuco_animals.py): synthetic and real rows are mixed by (y, b), so the indices must agree.
CELEBA_CLASSES, CELEBA_BIASES = ("not Smiling", "Smiling"), ("Female", "Male")
UTK_CLASSES, UTK_BIASES = ("Male", "Female"), ("old", "young")


@RECIPES.register("ffr-celeba")
class CelebASmiling(Recipe):
    """y = Smiling (0 not smiling, 1 smiling), b = gender (0 Female, 1 Male); "a headshot of {gender} celebrity ..."."""

    name = "ffr-celeba"
    generator = _FACES
    gray_threshold = 1.5e6 / 512**2

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.words = load_data("ffr_faces.yaml")["celeba"]

    def spec(self) -> GroupSpec:
        return GroupSpec(CELEBA_CLASSES, CELEBA_BIASES)

    def row(self, y: int, b: int, rng: np.random.Generator) -> dict[str, Any]:
        expression = pick(rng, self.words["smiling"] if y == 1 else self.words["not_smiling"])
        return {"prompt": f"a headshot of {CELEBA_BIASES[b]} celebrity {expression}"}


@RECIPES.register("ffr-utkface")
class UTKFaceGender(Recipe):
    """y = gender (0 Male, 1 Female), b = age (0 old, 1 young); "a headshot of a human {gender} {age phrase}"."""

    name = "ffr-utkface"
    generator = _FACES
    gray_threshold = 1.5e6 / 512**2

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.words = load_data("ffr_faces.yaml")["utkface"]

    def spec(self) -> GroupSpec:
        return GroupSpec(UTK_CLASSES, UTK_BIASES)

    def row(self, y: int, b: int, rng: np.random.Generator) -> dict[str, Any]:
        age = pick(rng, self.words[UTK_BIASES[b]])
        return {"prompt": f"a headshot of a human {UTK_CLASSES[y]} {age}"}


@RECIPES.register("ffr-spuco-animals")
class SpuCoAnimals(Recipe):
    """y ∈ {landbird, waterbird, small_dog, big_dog}, b ∈ {land, water, indoors, outdoors}."""

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
