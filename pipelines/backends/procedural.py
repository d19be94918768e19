"""The ``procedural`` backend: typeset glyphs, jittered, on flat colors — no model, CPU only.

Each row's ``glyph`` (a digit for colored-digits; the class index otherwise) is drawn with a font
(Pillow's scalable default font, plus DejaVu fonts when installed, or the ``fonts`` setting), with a
random stroke width and a random affine (rotation, scale, shear, shift), antialiased by rendering at 4×
and downsampling, then put on the row's ``background_rgb`` in ``ink_rgb`` with faint pixel noise. Every
random choice comes from the row's ``seed``: the image is a pure function of (settings, row).

A **generator signature** (``signature``, off by default) stands in for the artefacts a diffusion model leaves
in every image it makes: a fixed, zero-mean 8×8 RGB pattern, tiled over the image and added at ``signature``
gray levels (RMS). It copies what detectors of diffusion images find (Corvi et al., ICASSP 2023; Ricker et al.,
2022): latent diffusion decodes through an autoencoder that upsamples by 8, which leaves a periodic pattern of
that period (peaks in the image's spectrum) in every output, whatever it shows; like a GAN's fingerprint (Marra
et al., 2019), it is the same across images, independent of the content, faint to a person and easy for a CNN.
A colour cast would be a global shift that normalisation partly removes and that real photos vary in anyway;
blockiness is a JPEG artefact that real images carry too. The pattern is the same in every row (one generator),
so its strength is a dial for how visible "synthetic" (G in FFR's (B, G) argument) is: 0 leaves the images
exactly as without it.

Two styles, chosen per row (``style``), or for every row by the ``style`` setting (a generator of its own: the
embedded benchmark's two-generator study compares them, docs/generators.md):

- ``print`` (default): the glyph antialiased at the output size, with faint pixel noise — a crisp
  printed look.
- ``optdigits``: the glyph goes through the pipeline that made scikit-learn's handwritten digits (UCI
  optdigits): a 32×32 binary bitmap of the glyph cropped to its ink and scaled to fill the height, then
  ink pixels counted per 4×4 block (8×8, 17 gray levels), then upscaled and colored exactly as
  ``ffr.colored_digits`` does for the real images. Only the shapes differ (fonts vs handwriting), as for
  an off-the-shelf generator that knows its domain's look; crisp 32×32 glyphs barely transfer to the
  blurry real digits (the issue-9 check: 17 % stage-1-only worst-group accuracy).
"""

from __future__ import annotations

import glob
import math
import os
from functools import lru_cache
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ffr import colored_digits
from ffr.errors import FFRError
from ffr.options import Field, Options, PathField
from pipelines.backends.base import BACKENDS, GeneratorBackend

SUPERSAMPLE = 4
FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu", "/usr/share/fonts/TTF")
PALETTE = ((190, 45, 45), (45, 150, 70), (50, 80, 190), (200, 160, 40), (140, 60, 160), (40, 160, 170))
DEFAULT_INK = (245, 245, 245)
STYLES = ("print", "optdigits")


def default_fonts() -> list[str]:
    """'default' (Pillow's bundled font, always there) plus any DejaVu Sans/Serif/Mono faces found."""
    found: list[str] = []
    for d in FONT_DIRS:
        found += [p for p in glob.glob(os.path.join(d, "DejaVu*.ttf")) if "ExtraLight" not in p]
    return ["default", *sorted(found)]


@lru_cache(maxsize=64)
def _font(name: str, size: int) -> ImageFont.FreeTypeFont:
    if name == "default":
        return ImageFont.load_default(size=size)
    try:
        return ImageFont.truetype(name, size=size)
    except OSError:
        raise FFRError(f"procedural backend: font {name!r} cannot be loaded; expected a .ttf/.otf path") from None


def _rgb(value: Any, fallback: tuple[int, int, int]) -> np.ndarray:
    if value is None or len(value) == 0:
        return np.asarray(fallback, dtype=np.float32)
    return np.asarray([int(v) for v in value], dtype=np.float32)


class ProceduralOptions(Options):
    fonts: list[str] | None = PathField(None, keep=("default",), description="font files (.ttf/.otf) or 'default'; "
                                        "None = Pillow's default font plus the DejaVu faces found")
    max_rotation: float = Field(18.0, ge=0, le=180, description="largest random rotation, in degrees")
    noise: float = Field(4.0, ge=0, description="std of the pixel noise added to 'print' glyphs")
    style: Literal["print", "optdigits"] | None = Field(
        None, description="draw every row in this style; None: each row's own (the recipe's)")
    signature: float = Field(0.0, ge=0, le=128, description="strength (RMS, in gray levels) of the generator "
                                                            "signature: a fixed 8-pixel-periodic pattern in every "
                                                            "image, standing in for a diffusion decoder's artefacts")


SIGNATURE_PERIOD, SIGNATURE_SEED = 8, 20230519  # the autoencoder's upsampling factor; one fixed "generator"


@lru_cache(maxsize=1)
def signature_tile() -> np.ndarray:
    """The generator's fingerprint: a fixed (period, period, 3) pattern, zero mean and unit RMS."""
    tile = np.random.default_rng(SIGNATURE_SEED).standard_normal((SIGNATURE_PERIOD, SIGNATURE_PERIOD, 3))
    tile -= tile.mean()
    return (tile / np.sqrt((tile ** 2).mean())).astype(np.float32)


def add_signature(pixels: np.ndarray, strength: float) -> np.ndarray:
    """``pixels`` (H, W, 3, float) plus the tiled signature at ``strength`` gray levels; unchanged at 0."""
    if strength <= 0:
        return pixels
    h, w = pixels.shape[:2]
    reps = (-(-h // SIGNATURE_PERIOD), -(-w // SIGNATURE_PERIOD), 1)
    return pixels + strength * np.tile(signature_tile(), reps)[:h, :w]


@BACKENDS.register("procedural")
class ProceduralBackend(GeneratorBackend):
    name = "procedural"
    Options = ProceduralOptions

    def __init__(self, options: ProceduralOptions, batch_size: int = 8) -> None:
        super().__init__(options, batch_size)
        self.fonts = list(options.fonts) if options.fonts else default_fonts()
        for f in self.fonts:
            _font(f, 16)  # fail now, not in the middle of a shard
        self.max_rotation = float(options.max_rotation)
        self.noise = float(options.noise)
        self.signature = float(options.signature)

    @classmethod
    def prompt_warning(cls, recipe) -> str | None:
        if recipe.default_backend == cls.name:  # written for it (colored-digits): its rows carry the glyphs
            return None
        return (f"backend 'procedural' ignores the prompts and generator settings (steps, guidance) of recipe "
                f"{recipe.name!r}: it draws each row's class index as a digit on a color per bias; backend "
                "diffusers makes images of the prompts")

    def generate(self, rows: list[dict], init_images: list[Image.Image] | None = None) -> list[Image.Image]:
        return [self.render(row) for row in rows]

    def render(self, row: dict) -> Image.Image:
        rng = np.random.default_rng(int(row["seed"]))
        w, h = int(row.get("width") or 32), int(row.get("height") or 32)
        glyph = str(row.get("glyph") or int(row.get("y", 0)) % 10)
        bg = _rgb(row.get("background_rgb"), PALETTE[int(row.get("b", 0)) % len(PALETTE)])
        fg = _rgb(row.get("ink_rgb"), DEFAULT_INK)
        style = self.options.style or row.get("style") or "print"
        if style not in STYLES:
            raise FFRError(f"procedural backend: style {style!r} is unknown; expected one of {', '.join(STYLES)}")
        if style == "optdigits":
            ink = colored_digits.upscale(self.optdigits_levels(glyph, rng), h)[..., None]
            if w != h:
                ink = np.asarray(Image.fromarray(ink[..., 0]).resize((w, h), Image.Resampling.BILINEAR))[..., None]
            pixels = add_signature(ink * fg + (1.0 - ink) * bg, self.signature)
            return Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8), "RGB")
        W, H = w * SUPERSAMPLE, h * SUPERSAMPLE
        font = _font(self.fonts[int(rng.integers(len(self.fonts)))], int(H * rng.uniform(0.55, 0.8)))
        stroke = int(rng.integers(0, max(2, H // 24)))
        mask = Image.new("L", (W, H), 0)
        ImageDraw.Draw(mask).text((W / 2, H / 2), glyph, fill=255, font=font, anchor="mm",
                                  stroke_width=stroke, stroke_fill=255)
        mask = mask.transform((W, H), Image.Transform.AFFINE, self._affine(rng, W, H),
                              resample=Image.Resampling.BILINEAR)
        ink = np.asarray(mask.resize((w, h), Image.Resampling.LANCZOS), dtype=np.float32)[..., None] / 255.0
        pixels = add_signature(ink * fg + (1.0 - ink) * bg + rng.normal(0.0, self.noise, size=(h, w, 3)),
                               self.signature)
        return Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8), "RGB")

    def optdigits_levels(self, glyph: str, rng: np.random.Generator, canvas: int = 128) -> np.ndarray:
        """The 8×8, 0–16 optdigits image of one glyph: drawn with a random font, pen width and affine,
        cropped to its ink, scaled to fill the bitmap's height (aspect kept, centered), binarized, block-summed."""
        font = _font(self.fonts[int(rng.integers(len(self.fonts)))], int(canvas * rng.uniform(0.55, 0.7)))
        # Pen widths: optdigits strokes cover about half the 8×8 blocks, like a regular-to-bold font.
        stroke = int(rng.integers(0, canvas // 28))
        mask = Image.new("L", (canvas, canvas), 0)
        ImageDraw.Draw(mask).text((canvas / 2, canvas / 2), glyph, fill=255, font=font, anchor="mm",
                                  stroke_width=stroke, stroke_fill=255)
        mask = mask.transform((canvas, canvas), Image.Transform.AFFINE, self._affine(rng, canvas, canvas),
                              resample=Image.Resampling.BILINEAR)
        box = mask.point(lambda v: 255 if v >= 128 else 0).getbbox()
        n = colored_digits.BITMAP_SIZE
        bitmap = Image.new("L", (n, n), 0)
        if box is not None:
            ink = mask.crop(box)
            width = max(1, min(n, round(ink.width * n / ink.height)))
            bitmap.paste(ink.resize((width, n), Image.Resampling.BOX), ((n - width) // 2, 0))
        return colored_digits.block_levels(np.asarray(bitmap) >= 128)

    def _affine(self, rng: np.random.Generator, W: int, H: int) -> tuple[float, ...]:
        """Inverse affine (output → input pixel) about the image center: rotation, scale, shear, shift."""
        angle = math.radians(rng.uniform(-self.max_rotation, self.max_rotation))
        scale = rng.uniform(0.8, 1.15)
        shear = rng.uniform(-0.25, 0.25)
        tx, ty = rng.uniform(-0.12, 0.12, size=2) * (W, H)
        cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
        a, b, d, e = cos, sin + shear * cos, -sin, cos - shear * sin
        cx, cy = W / 2, H / 2
        return (a, b, cx - a * (cx + tx) - b * (cy + ty), d, e, cy - d * (cx + tx) - e * (cy + ty))
