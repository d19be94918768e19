"""``colored-digits``: the synthetic side of the embedded offline benchmark (ffr/colored_digits.py).

Class = digit size class (small 0–4 / large 5–9), bias = background color. Rows name the digit to draw
(``glyph``), the colors and the ``optdigits`` style: the ``procedural`` backend renders font digits the way
scikit-learn's real digits were made (cropped to the ink, block-summed to 8×8 with 17 gray levels,
upscaled, colored alike). The synthetic→real gap that remains is fonts vs handwriting — what an
off-the-shelf generator that knows its domain would leave — so stage 1 alone learns the core feature.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ffr import colored_digits
from ffr.groups import GroupSpec
from pipelines.recipes.base import RECIPES, Recipe


@RECIPES.register("colored-digits")
class ColoredDigits(Recipe):
    name = "colored-digits"
    default_backend = "procedural"
    generator = {"height": colored_digits.IMAGE_SIZE, "width": colored_digits.IMAGE_SIZE,
                 "steps": 0, "guidance_scale": 0.0}

    def spec(self) -> GroupSpec:
        return colored_digits.SPEC

    def row(self, y: int, b: int, rng: np.random.Generator) -> dict[str, Any]:
        digit = int(rng.integers(5)) + 5 * y
        color = colored_digits.BIAS_NAMES[b]
        return {"prompt": f"the digit {digit} in white on a {color} background", "glyph": str(digit),
                "background_rgb": list(colored_digits.BACKGROUND_RGB[color]), "ink_rgb": list(colored_digits.INK_RGB),
                "style": "optdigits"}
