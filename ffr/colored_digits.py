"""The embedded offline benchmark's shared definition: digit size class × background color.

Both sides of the benchmark use these constants: the real side (scikit-learn's bundled handwritten
digits, ``ffr.datasets``) and the synthetic side (the ``colored-digits`` recipe rendered by the
procedural backend, ``pipelines``). The background color is the bias; in the biased real training set
"small" digits are mostly on red and "large" digits mostly on green, so color is a shortcut.
"""

from __future__ import annotations

import numpy as np

from ffr.groups import GroupSpec

CLASS_NAMES = ("small (0-4)", "large (5-9)")
BIAS_NAMES = ("red", "green")
BACKGROUND_RGB = {"red": (190, 45, 45), "green": (45, 150, 70)}
INK_RGB = (245, 245, 245)
IMAGE_SIZE = 32
SPEC = GroupSpec(CLASS_NAMES, BIAS_NAMES)
# scikit-learn's digits are UCI "optdigits": 32×32 binary bitmaps, each 4×4 block's count of ink pixels
# (0–16), i.e. 8×8 images with 17 gray levels. Both sides of the benchmark go through these two steps.
BITMAP_SIZE, BLOCK, LEVELS = 32, 4, 16


def digit_class(digit: int | np.ndarray):
    """Digit 0–9 → class 0 (small) or 1 (large)."""
    return (np.asarray(digit) >= 5).astype(np.int64)


def block_levels(bitmap: np.ndarray) -> np.ndarray:
    """A BITMAP_SIZE² binary bitmap → the 8×8 optdigits image: ink pixels per 4×4 block, 0–16."""
    bits = (np.asarray(bitmap) > 0).astype(np.int64)
    n = BITMAP_SIZE // BLOCK
    return bits.reshape(n, BLOCK, n, BLOCK).sum(axis=(1, 3))


def upscale(levels: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """8×8 images of levels 0–16, shape (8, 8) or (N, 8, 8) → ``size``² intensities in [0, 1] (bilinear)."""
    import torch

    levels = np.asarray(levels, dtype=np.float32)
    batch = torch.as_tensor(levels.reshape(-1, 1, *levels.shape[-2:]) / LEVELS)
    images = torch.nn.functional.interpolate(batch, size=(size, size), mode="bilinear", align_corners=False)
    return images[:, 0].clamp(0, 1).numpy().reshape(*levels.shape[:-2], size, size)


def colorize(intensity: np.ndarray, bias: int) -> np.ndarray:
    """Gray ink intensity in [0, 1] (H, W) → uint8 RGB (H, W, 3) on the bias's background color."""
    a = np.clip(np.asarray(intensity, dtype=np.float32), 0.0, 1.0)[..., None]
    bg = np.asarray(BACKGROUND_RGB[BIAS_NAMES[bias]], dtype=np.float32)
    ink = np.asarray(INK_RGB, dtype=np.float32)
    return np.round(a * ink + (1 - a) * bg).astype(np.uint8)
