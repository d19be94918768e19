"""Synthetic-quality corruptions for FFR's ablation: how much does stage 1 need *good* synthetic images?

FFR's ablation (``datasets/dataset_gen.py``, ``--severity s``) degrades every stage-1 synthetic image with three
ImageNet-C corruptions (Hendrycks & Dietterich, ICLR 2019) of the ``imagecorruptions`` package, **stacked** at the
same severity s — pixelate, then defocus blur, then Gaussian noise (``ffr-stacked`` here) — on the image as
generated (512 × 512), *before* the resize to the training size, and draws new noise every time an image is
loaded, so every epoch sees other noise. Single corruptions stay available as options of their own.

Each corruption reproduces ``imagecorruptions`` 1.1.2 (``corruptions.py``), which FFR pinned, without its OpenCV,
scikit-image and numba dependencies:

- ``pixelate``: PIL BOX down to ``int(side × c)``, then NEAREST back up;
- ``defocus-blur``: the aliased disk kernel (on a 17 × 17 grid up to radius 8, else (2r+1)²), smoothed by a 3 × 3
  (5 × 5 beyond radius 8) Gaussian of σ = alias blur, then correlated with each channel in [0, 1], borders
  reflected without repeating the edge pixel (OpenCV's default ``BORDER_REFLECT_101``);
- ``gaussian-noise``: additive N(0, c²) in [0, 1];

each clipped to [0, 1], scaled to 0–255 and truncated to uint8 (``np.uint8`` in ``imagecorruptions.corrupt``),
so a stack converts to uint8 between its steps exactly as FFR's three ``corrupt`` calls did.

One registry: ``create(name)`` → ``fn(image: uint8 H×W×3, severity, rng) -> uint8 H×W×3``. Randomness comes
only from the ``numpy.random.Generator`` passed in; :class:`Corrupt` derives one per draw (seed, epoch, position).
"""

from __future__ import annotations

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
PIXELATE_FACTOR = (0.6, 0.5, 0.4, 0.3, 0.25)  # BOX down to this fraction, NEAREST back up
STACK = ("pixelate", "defocus-blur", "gaussian-noise")  # FFR's order (dataset_gen.py, corrupt_image)

Corruption = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]


def check_severity(severity: int) -> int:
    if isinstance(severity, bool) or int(severity) != severity or int(severity) not in SEVERITIES:
        raise FFRError(f"corruption severity {severity!r} is out of range; expected an integer 1 to 5")
    return int(severity)


def _to_uint8(x01: np.ndarray) -> np.ndarray:
    """[0, 1] floats → uint8 as imagecorruptions returns them: clipped, × 255, truncated (``np.uint8``)."""
    return (np.clip(x01, 0.0, 1.0) * 255).astype(np.uint8)


@CORRUPTIONS.register("gaussian-noise")
def gaussian_noise(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    x = np.asarray(image, dtype=np.float64) / 255.0
    return _to_uint8(x + rng.normal(0.0, GAUSSIAN_NOISE_STD[severity - 1], size=x.shape))


def _gaussian_1d(size: int, sigma: float) -> np.ndarray:
    """OpenCV's ``getGaussianKernel(size, sigma)`` for sigma > 0: sampled, normalized to sum 1."""
    t = np.arange(size, dtype=np.float64) - (size - 1) / 2
    k = np.exp(-(t**2) / (2 * sigma**2))
    return k / k.sum()


def disk(radius: float, alias_blur: float) -> np.ndarray:
    """imagecorruptions' defocus kernel: an aliased disk normalized to sum 1, then Gaussian-smoothed (not
    renormalized), in float32 like the original."""
    from scipy.ndimage import correlate1d

    if radius <= 8:
        grid, ksize = np.arange(-8, 9), 3
    else:
        grid, ksize = np.arange(-radius, radius + 1), 5
    xx, yy = np.meshgrid(grid, grid)
    kernel = np.asarray(xx**2 + yy**2 <= radius**2, dtype=np.float32)
    kernel /= kernel.sum()
    weights = _gaussian_1d(ksize, alias_blur)
    for axis in (0, 1):  # cv2.GaussianBlur: separable, BORDER_REFLECT_101 (scipy's "mirror")
        kernel = correlate1d(kernel, weights, axis=axis, mode="mirror")
    return kernel.astype(np.float32)


@CORRUPTIONS.register("defocus-blur")
def defocus_blur(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    from scipy.signal import fftconvolve

    kernel = disk(*DEFOCUS_RADIUS_ALIAS[severity - 1]).astype(np.float64)
    x = np.asarray(image, dtype=np.float64) / 255.0
    half = kernel.shape[0] // 2
    # cv2.filter2D (a correlation; the disk is symmetric) with BORDER_REFLECT_101 = numpy's "reflect" padding. An
    # FFT convolution, like OpenCV's for kernels this large: a direct 17 × 17 filter of a 512² image costs ~0.3 s.
    padded = np.pad(x, ((half, half), (half, half), (0, 0)), mode="reflect")
    blurred = fftconvolve(padded, kernel[::-1, ::-1, None], mode="valid", axes=(0, 1))
    return _to_uint8(blurred)


@CORRUPTIONS.register("pixelate")
def pixelate(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    h, w = image.shape[:2]
    factor = PIXELATE_FACTOR[severity - 1]
    small = Image.fromarray(np.asarray(image, dtype=np.uint8)).resize(
        (max(1, int(w * factor)), max(1, int(h * factor))), Image.Resampling.BOX)
    return np.asarray(small.resize((w, h), Image.Resampling.NEAREST))


@CORRUPTIONS.register("ffr-stacked")
def ffr_stacked(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """FFR's quality ablation: pixelate, defocus blur and Gaussian noise, all at ``severity``, in that order."""
    for name in STACK:
        image = CORRUPTIONS.get(name)(image, severity, rng)
    return image


def create(name: str) -> Corruption:
    """The registered corruption ``name`` (one clear error naming the known ones otherwise)."""
    return CORRUPTIONS.get(name)


def names() -> list[str]:
    return CORRUPTIONS.names()


class Corrupt:
    """Corruption ``name`` at ``severity`` on a PIL image at its own size; picklable (DataLoader workers).

    ``rng(*key)`` gives the generator of one draw: training keys it by (epoch, position in the epoch's draw), so an
    image gets new noise every epoch, the same noise in a rerun, and the same whatever the number of workers."""

    def __init__(self, name: str, severity: int, seed: int = 0) -> None:
        self.fn, self.name, self.severity, self.seed = create(name), name, check_severity(severity), int(seed)

    def rng(self, *key: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, 11, *(int(k) for k in key)])

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        return Image.fromarray(self.fn(np.asarray(image.convert("RGB")), self.severity, rng))

    def __repr__(self) -> str:
        return f"Corrupt({self.name!r}, severity={self.severity})"
