"""``colored-digits``: scikit-learn's bundled handwritten digits on a red or green background (offline).

Target = digit size class (0–4 vs 5–9), bias = background color. Split by digit (70/15/15, seeded), so one
handwritten digit never appears in two splits. Test renders every test digit in *both* colors: its groups
are exactly balanced and each shape is seen on each background, so test worst-group accuracy measures how
much a model reads the color. Train gives each digit one color, the class's majority color (small↔red,
large↔green) three times out of four, then FFR's bias-ratio rule downsamples the minority.

Validation is rendered like test (every val digit on both backgrounds, ~135 per group), not biased like
train. With only 1,797 digits, a biased val set downsampled by FFR's rule keeps the floor of 10 per
minority group: one digit then moves validation worst-group accuracy by 10 points, and model selection by
it is a coin toss between epochs. A group-balanced val set (as in Waterbirds) moves by < 1 point per
digit. The 70/15/15 split gives val and test ~135 digits per group and costs train ~12 % of its digits
(train minority groups keep ~25 at bias 0.95, as before). ``balanced_val=False`` restores FFR's biased val.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
from PIL import Image

from ffr import colored_digits as cd
from ffr.datasets.base import IMAGE_SOURCES, GroupedSplit, reader
from ffr.datasets.splitting import apply_bias_ratio, random_split
from ffr.errors import FFRError
from ffr.options import Field, Options, PathField

MAJORITY_COLOR = {0: 0, 1: 1}  # class → bias index: small ↔ red, large ↔ green
PRE_SKEW = 0.75  # share of train/val digits drawn on their class's majority color before the bias ratio
SPLIT = (0.7, 0.15, 0.15)  # train / val / test digits (see the module docstring for why val is this large)


@lru_cache(maxsize=2)
def digit_intensities(size: int = cd.IMAGE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """All 1797 sklearn digits upsampled to ``size``² gray intensities in [0, 1], and their labels 0–9."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return cd.upscale(digits.images, size), digits.target.astype(np.int64)


@IMAGE_SOURCES.register("colored-digits")
class DigitImages:
    """key → colored PIL image, rendered on demand (a plain picklable object, for DataLoader workers)."""

    def to_plan(self, keys: list[str]) -> tuple[dict, None]:
        return {"kind": "colored-digits"}, None

    @classmethod
    def from_plan(cls, description: dict, keys: list[str], columns) -> "DigitImages":
        return cls()

    def __call__(self, key: str) -> Image.Image:
        try:
            _, index, color = key.split("/")
            intensity = digit_intensities()[0][int(index)]
            return Image.fromarray(cd.colorize(intensity, cd.BIAS_NAMES.index(color)))
        except (ValueError, IndexError):
            raise FFRError(f"colored-digits key {key!r} is not of the form digits/<index>/<red|green>") from None


class ColoredDigitsOptions(Options):
    root: str | None = PathField(None, description="unused: the digits are embedded (scikit-learn)")
    bias_ratio: float | None = Field(0.95, gt=0.5, lt=1.0, description="share of each class's majority color kept "
                                                                       "in train (FFR's downsampling)")
    seed: int = Field(0, ge=0, strict=True, description="seed of the split, the colors and the downsampling")
    pre_skew: float = Field(PRE_SKEW, gt=0.5, lt=1.0, description="share of train digits drawn on their class's "
                                                                  "majority color before the bias ratio")
    balanced_val: bool = Field(True, description="val digits in both colors (balanced); false: biased like train")


@reader("colored-digits", ColoredDigitsOptions)
def colored_digits(options: ColoredDigitsOptions) -> dict[str, GroupedSplit]:
    """Three splits held in memory; keys are ``digits/<index>/<color>``."""
    bias_ratio, seed, pre_skew, balanced_val = options.bias_ratio, options.seed, options.pre_skew, options.balanced_val
    intensities, digits = digit_intensities()
    y_all = cd.digit_class(digits)
    split_of = random_split(len(digits), seed, SPLIT)
    both_colors = ("test", "val") if balanced_val else ("test",)
    rng = np.random.default_rng([seed, 1])
    majority = np.vectorize(MAJORITY_COLOR.get)(y_all)
    one_color = np.where(rng.random(len(digits)) < pre_skew, majority, 1 - majority)

    rows = []
    for i in range(len(digits)):
        colors = (0, 1) if split_of[i] in both_colors else (int(one_color[i]),)
        for b in colors:
            rows.append({"key": f"digits/{i}/{cd.BIAS_NAMES[b]}", "y": int(y_all[i]), "b": b, "source": 0,
                         "digit": int(digits[i]), "split": split_of[i]})
    table = pd.DataFrame(rows)

    load_image = DigitImages()
    splits = {name: GroupedSplit(cd.SPEC, table[table["split"] == name].drop(columns="split"), load_image, name)
              for name in ("train", "val", "test")}
    if balanced_val:  # the bias ratio shapes train only; val, like test, stays balanced
        return {**apply_bias_ratio({"train": splits["train"]}, bias_ratio, seed), "val": splits["val"],
                "test": splits["test"]}
    return apply_bias_ratio(splits, bias_ratio, seed)
