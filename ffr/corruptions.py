"""Synthetic-quality corruptions for FFR's ablation: how much does stage 1 need *good* synthetic images?

FFR's ablation degrades the stage-1 synthetic images with ImageNet-C corruptions (Hendrycks & Dietterich,
ICLR 2019; the ``imagecorruptions`` package the FFR code uses) at severities 1–5, with ImageNet-C's
parameters. Like that package, they are applied as is at any image size; ffr applies them after the resize
to the training size, so at 224 pixels they are exactly ImageNet-C's. (On the 32-pixel embedded digits the
blur is harsh — severity 1 is a 3-pixel disk — which is the point of an ablation: scaling the radius down
would make severities 1–2 no-ops there.)

One registry: ``create(name)`` → ``fn(image: uint8 H×W×3, severity, rng) -> uint8 H×W×3``. Randomness comes
only from the ``numpy.random.Generator`` passed in (``rng_for`` seeds one per image key).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image

from ffr.errors import FFRError
from ffr.registry import Registry

CORRUPTIONS: Registry = Registry("corruption", plugins="ffr.corruptions")
SEVERITIES = (1, 2, 3, 4, 5)

# ImageNet-C parameters, severity 1..5 (imagecorruptions 1.1.2, ``corruptions.py``).
GAUSSIAN_NOISE_STD = (0.08, 0.12, 0.18, 0.26, 0.38)  # × the [0, 1] pixel range
DEFOCUS_RADIUS_ALIAS = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))  # disk radius, Gaussian σ (pixels)
PIXELATE_FACTOR = (0.6, 0.5, 0.4, 0.3, 0.25)  # downsample to this fraction, then back up (box filter)

Corruption = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]


def check_severity(severity: int) -> int:
    if isinstance(severity, bool) or int(severity) != severity or int(severity) not in SEVERITIES:
        raise FFRError(f"corruption severity {severity!r} is out of range; expected an integer 1 to 5")
    return int(severity)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


@CORRUPTIONS.register("gaussian-noise")
def gaussian_noise(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    x = np.asarray(image, dtype=np.float32) / 255.0
    return _to_uint8(255 * (x + rng.normal(0.0, GAUSSIAN_NOISE_STD[severity - 1], size=x.shape)))


def _disk(radius: float, alias_sigma: float) -> np.ndarray:
    """ImageNet-C's aliased disk kernel (normalized), smoothed by a Gaussian of ``alias_sigma``."""
    from scipy.ndimage import gaussian_filter

    half = max(1, int(np.ceil(radius)) + int(np.ceil(3 * alias_sigma)))
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    kernel = ((xx**2 + yy**2) <= max(radius, 0.5) ** 2).astype(np.float64)
    kernel = gaussian_filter(kernel / kernel.sum(), alias_sigma) if alias_sigma > 0 else kernel
    return kernel / kernel.sum()


@CORRUPTIONS.register("defocus-blur")
def defocus_blur(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    from scipy.ndimage import convolve

    kernel = _disk(*DEFOCUS_RADIUS_ALIAS[severity - 1])
    x = np.asarray(image, dtype=np.float64)
    return _to_uint8(np.stack([convolve(x[..., c], kernel, mode="reflect") for c in range(x.shape[2])], axis=-1))


@CORRUPTIONS.register("pixelate")
def pixelate(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    h, w = image.shape[:2]
    factor = PIXELATE_FACTOR[severity - 1]
    small = Image.fromarray(np.asarray(image, dtype=np.uint8)).resize(
        (max(1, int(w * factor)), max(1, int(h * factor))), Image.Resampling.BOX)
    return np.asarray(small.resize((w, h), Image.Resampling.BOX))


def create(name: str) -> Corruption:
    """The registered corruption ``name`` (one clear error naming the known ones otherwise)."""
    return CORRUPTIONS.get(name)


def names() -> list[str]:
    return CORRUPTIONS.names()


def rng_for(seed: int, pixels: np.ndarray) -> np.random.Generator:
    """One generator per (seed, image content): an image is corrupted the same way in every run and in any
    loading order (a transform sees pixels, not keys)."""
    return np.random.default_rng([int(seed), zlib.crc32(np.ascontiguousarray(pixels).tobytes())])


class Corrupt:
    """A picklable PIL → PIL transform step: applies corruption ``name`` at ``severity`` to every image."""

    def __init__(self, name: str, severity: int, seed: int = 0) -> None:
        self.fn, self.name, self.severity, self.seed = create(name), name, check_severity(severity), int(seed)

    def __call__(self, image: Image.Image) -> Image.Image:
        pixels = np.asarray(image.convert("RGB"))
        return Image.fromarray(self.fn(pixels, self.severity, rng_for(self.seed, pixels)))

    def __repr__(self) -> str:
        return f"Corrupt({self.name!r}, severity={self.severity})"
