"""The ``compositing`` backend: the embedded, CPU-only stand-in for Stable Diffusion in D3S-style recipes.

It takes the same rows a diffusion model gets and answers the same two requests:

- text-to-image of a background phrase (``d3s-background-templates`` rows): a procedural texture for the
  row's background label — grass blades, road with a lane mark, forest trunks, water waves, sand speckle,
  indoor wall and floor, snow, rain streaks, night stars, a dark cave — drawn from the row's seed;
- img2img of a guide (a foreground square pasted on a template): the foreground's own flat backdrop inside
  the pasted square is replaced, with weight ``strength``, by scene texture copied from beside the square
  (a crude inpainting), and the ink is kept — so the object now sits *in* the scene, as img2img blends it.
  This keys on a flat foreground backdrop: it suits procedural foregrounds (digits), not photographs.

Every random choice comes from the row's ``seed``: the image is a pure function of (settings, row, guide).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ffr.options import Field, Options
from pipelines.backends.base import BACKENDS, GeneratorBackend
from pipelines.guides import FG_SCALE, paste_box


def _noise(rng: np.random.Generator, h: int, w: int, scale: int) -> np.ndarray:
    """Smooth value noise in [0, 1]: a coarse random grid upsampled bilinearly."""
    gh, gw = max(2, h // scale + 2), max(2, w // scale + 2)
    grid = Image.fromarray((rng.random((gh, gw)) * 255).astype(np.uint8), "L")
    return np.asarray(grid.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0


def _mix(a: tuple, b: tuple, t: np.ndarray) -> np.ndarray:
    return np.asarray(a, np.float32) * (1 - t[..., None]) + np.asarray(b, np.float32) * t[..., None]


def texture(label: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """An (h, w, 3) float image of background ``label``; unknown labels get seeded colored noise."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    n = _noise(rng, h, w, max(2, w // 8))
    fine = rng.random((h, w)).astype(np.float32)
    if label == "grass":
        blades = (np.sin(xx * rng.uniform(1.2, 1.8) + n * 6) > 0.3).astype(np.float32)
        img = _mix((40, 110, 35), (110, 190, 70), 0.5 * blades + 0.5 * n)
    elif label == "road":
        img = _mix((70, 70, 75), (120, 120, 125), 0.6 * fine + 0.4 * n)
        lane = (np.abs(yy - h / 2) < max(1, h // 24)) & ((xx // max(2, w // 6)) % 2 == 0)
        img[lane] = (235, 210, 60)
    elif label == "forest":
        period = rng.uniform(w / 6, w / 4)
        trunks = (np.mod(xx + rng.uniform(0, period), period) < period * 0.25).astype(np.float32)
        img = _mix((20, 70, 30), (90, 60, 30), trunks) * (0.7 + 0.5 * n[..., None])
    elif label == "water":
        waves = 0.5 + 0.5 * np.sin(yy * rng.uniform(0.6, 0.9) + 3 * n)
        img = _mix((20, 60, 150), (90, 160, 220), waves)
    elif label == "sand":
        img = _mix((200, 175, 120), (235, 215, 160), 0.5 * n + 0.5 * fine)
    elif label == "indoors":
        floor = yy > h * rng.uniform(0.55, 0.7)
        boards = 0.5 + 0.5 * np.sin(xx * 0.9)
        img = np.where(floor[..., None], _mix((120, 80, 45), (160, 110, 65), boards), _mix((225, 215, 190),
                                                                                           (200, 190, 165), n))
    elif label == "snow":
        img = _mix((215, 225, 240), (250, 250, 255), n) - (fine > 0.97)[..., None] * 40
    elif label == "rain":
        streaks = (np.mod(xx + yy * 0.5 + rng.uniform(0, 7), 7) < 1).astype(np.float32) * (fine > 0.4)
        img = _mix((90, 100, 115), (200, 210, 225), 0.25 * n + 0.75 * streaks)
    elif label == "night":
        img = _mix((5, 10, 35), (25, 30, 70), n)
        img[fine > 0.985] = (255, 255, 220)
    elif label == "cave":
        r = np.hypot((xx - w / 2) / w, (yy - h / 2) / h)
        img = _mix((95, 70, 50), (25, 18, 12), np.clip(r * 1.6 + 0.3 * n, 0, 1))
    else:
        base = rng.integers(0, 256, size=3)
        img = _mix(tuple(base), tuple(255 - base), n)
    return np.clip(img, 0, 255)


class CompositingOptions(Options):
    noise: float = Field(3.0, ge=0, description="std of the pixel noise added to every output")
    fg_scale: float = Field(FG_SCALE, gt=0, le=1, description="side of the pasted foreground; must match the "
                                                               "guides' (pipelines.guides.FG_SCALE)")


@BACKENDS.register("compositing")
class CompositingBackend(GeneratorBackend):
    name = "compositing"
    Options = CompositingOptions

    def __init__(self, options: CompositingOptions, batch_size: int = 8) -> None:
        super().__init__(options, batch_size)
        self.noise, self.fg_scale = float(options.noise), float(options.fg_scale)

    @classmethod
    def prompt_warning(cls, recipe) -> str | None:
        # What it was written for: D3S background templates (a texture per background label) and D3S-style
        # guides (it pastes their foreground into the scene).
        if recipe.name == "d3s-background-templates" or getattr(recipe, "guided", False):
            return None
        return (f"backend 'compositing' ignores the prompts and generator settings of recipe {recipe.name!r}: "
                "without img2img guides (a D3S recipe with foreground_root) it makes a texture per bias label and "
                "no object; backend diffusers makes images of the prompts")

    def generate(self, rows: list[dict], init_images: list[Image.Image] | None = None) -> list[Image.Image]:
        if init_images is None:
            return [self._finish(self._text_to_image(r), r) for r in rows]
        return [self._finish(self._image_to_image(r, g), r) for r, g in zip(rows, init_images)]

    def _text_to_image(self, row: dict) -> np.ndarray:
        h, w = int(row.get("height") or 64), int(row.get("width") or 64)
        return texture(str(row.get("bias_name", "")), h, w, np.random.default_rng([int(row["seed"]), 11]))

    def _image_to_image(self, row: dict, guide: Image.Image) -> np.ndarray:
        img = np.asarray(guide.convert("RGB"), dtype=np.float32).copy()
        size = img.shape[1]
        x, y, side = paste_box(int(row["seed"]), size, self.fg_scale)
        patch = img[y:y + side, x:x + side]
        border = np.concatenate([patch[0], patch[-1], patch[:, 0], patch[:, -1]])
        backdrop = np.median(border, axis=0)
        ink = np.clip(np.abs(patch - backdrop).max(axis=2, keepdims=True) / 60.0, 0, 1)  # soft key on the backdrop
        # scene texture from beside the square (left or right, whichever fits), mirrored so edges meet
        sx = x - side if x >= side else min(x + side, size - side)
        scene = img[y:y + side, sx:sx + side][:, ::-1]
        strength = float(row.get("strength") or 0.0)
        filled = strength * scene + (1 - strength) * patch
        img[y:y + side, x:x + side] = ink * patch + (1 - ink) * filled
        return img

    def _finish(self, pixels: np.ndarray, row: dict) -> Image.Image:
        rng = np.random.default_rng([int(row["seed"]), 12])
        out = pixels + rng.normal(0.0, self.noise, size=pixels.shape)
        return Image.fromarray(np.clip(np.round(out), 0, 255).astype(np.uint8), "RGB")
