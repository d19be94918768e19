"""FFR's synthetic-quality ablation: every registered corruption, at every severity, on a real rendered image."""

import numpy as np
import pytest
from PIL import Image

from ffr import corruptions
from ffr.errors import FFRError


def _digit(index: int = 8, size: int = 32) -> np.ndarray:
    """A real colored digit (the embedded benchmark's image), at ``size`` pixels."""
    from ffr.datasets.colored_digits import DigitImages

    image = DigitImages()(f"digits/{index}/{('red', 'green')[index % 2]}")
    return np.asarray(image.resize((size, size), Image.Resampling.BICUBIC))


def _distortion(name: str, severity: int, image: np.ndarray) -> float:
    out = corruptions.create(name)(image, severity, np.random.default_rng(0))
    assert out.shape == image.shape and out.dtype == np.uint8
    return float(np.sqrt(np.mean((out.astype(np.float64) - image) ** 2)))


@pytest.mark.parametrize("name", corruptions.names())
def test_corruption_distorts_more_at_every_higher_severity(name):
    """Root-mean-square change, averaged over a few digits, strictly grows with severity at ImageNet-C's size
    (224). At the digits' 32 px it grows overall; pixelate's severities 4 and 5 are then about equal (9- vs
    8-pixel grids, and 8 divides 32 exactly), so there each step may lose at most 5 %."""
    for size in (224, 32):
        images = [_digit(i, size) for i in range(6)]
        distortion = [np.mean([_distortion(name, s, im) for im in images]) for s in corruptions.SEVERITIES]
        assert distortion[0] > 0.2, f"{name} severity 1 leaves a {size}px image untouched"
        slack = 1.0 if size == 224 else 0.95
        assert all(b > slack * a for a, b in zip(distortion, distortion[1:])), f"{name} at {size}px: {distortion}"
        assert distortion[-1] > 1.5 * distortion[0], f"{name} at {size}px: {distortion}"


@pytest.mark.parametrize("name", corruptions.names())
def test_corruption_is_deterministic_per_draw_and_seed(name):
    """The same (seed, epoch, position) draw gives the same image; the noisy ones give other noise to another draw
    (a later epoch) and to another seed."""
    image = _digit()
    step = corruptions.Corrupt(name, 3, seed=1)
    a, b = (np.asarray(step(Image.fromarray(image), step.rng(0, 5))) for _ in range(2))
    assert np.array_equal(a, b)
    noisy = name in ("gaussian-noise", "ffr-stacked")
    next_epoch = np.asarray(step(Image.fromarray(image), step.rng(1, 5)))
    other_seed = corruptions.Corrupt(name, 3, seed=2)
    assert np.array_equal(a, next_epoch) != noisy
    assert np.array_equal(a, np.asarray(other_seed(Image.fromarray(image), other_seed.rng(0, 5)))) != noisy


def test_imagenet_c_parameters_and_bad_values():
    assert corruptions.GAUSSIAN_NOISE_STD[0] == 0.08 and corruptions.PIXELATE_FACTOR[-1] == 0.25
    assert set(corruptions.names()) >= {"gaussian-noise", "defocus-blur", "pixelate", "ffr-stacked"}
    with pytest.raises(FFRError, match="severity 6 is out of range; expected an integer 1 to 5"):
        corruptions.Corrupt("pixelate", 6)
    with pytest.raises(FFRError, match="unknown corruption 'fog'"):
        corruptions.create("fog")
