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


def digit_class(digit: int | np.ndarray):
    """Digit 0–9 → class 0 (small) or 1 (large)."""
    return (np.asarray(digit) >= 5).astype(np.int64)


def colorize(intensity: np.ndarray, bias: int) -> np.ndarray:
    """Gray ink intensity in [0, 1] (H, W) → uint8 RGB (H, W, 3) on the bias's background color."""
    a = np.clip(np.asarray(intensity, dtype=np.float32), 0.0, 1.0)[..., None]
    bg = np.asarray(BACKGROUND_RGB[BIAS_NAMES[bias]], dtype=np.float32)
    ink = np.asarray(INK_RGB, dtype=np.float32)
    return np.round(a * ink + (1 - a) * bg).astype(np.uint8)
