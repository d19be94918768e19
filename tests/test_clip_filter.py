"""The CLIP score filter on a tiny random-weight CLIP model loaded with the real ``from_pretrained`` (CPU, offline)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from PIL import Image
from tiny_diffusers import build_tiny_clip

from ffr.errors import FFRError
from pipelines.clip_filter import ClipScoreFilter


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> str:
    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip") / "model")


def _images(n: int, size: int = 40) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


PROMPTS = ["a photo of a cat", "a dog on the grass", "the sea at night", "a red car", "a bird in the water"]


def test_scores_are_finite_cosines_times_100_and_pairwise(tiny_clip):
    clip = ClipScoreFilter(tiny_clip, threshold=0.0, device="cpu", batch_size=2)  # batches of 2: crosses borders
    images = _images(len(PROMPTS))
    scores = clip.scores(images, PROMPTS)
    assert len(scores) == len(PROMPTS)
    assert all(math.isfinite(s) and -100.0 <= s <= 100.0 for s in scores)
    assert len(set(scores)) == len(scores)  # every pair scored on its own
    # A pair's score does not depend on the other pairs in the call.
    assert clip.scores(images[3:4], PROMPTS[3:4])[0] == pytest.approx(scores[3], abs=1e-4)


def test_keep_respects_the_threshold(tiny_clip):
    images = _images(len(PROMPTS))
    scores = ClipScoreFilter(tiny_clip, threshold=0.0, device="cpu").scores(images, PROMPTS)
    middle = sorted(scores)[len(scores) // 2]
    kept = ClipScoreFilter(tiny_clip, threshold=middle, device="cpu").keep(images, PROMPTS)
    assert kept == [s >= middle for s in scores]
    assert 0 < sum(kept) < len(kept)
    assert not any(ClipScoreFilter(tiny_clip, threshold=101.0, device="cpu").keep(images, PROMPTS))


def test_loads_from_an_s3_prefix(tiny_clip, s3_bucket, tmp_path):
    from ffr.storage import filesystem

    fs, _ = filesystem(s3_bucket)
    prefix = f"{s3_bucket}/clip/tiny"
    for name in os.listdir(tiny_clip):
        fs.put_file(os.path.join(tiny_clip, name), f"{prefix[len('s3://'):]}/{name}")
    images = _images(2)
    from_s3 = ClipScoreFilter(prefix, threshold=0.0, cache_dir=str(tmp_path)).scores(images, PROMPTS[:2])
    local = ClipScoreFilter(tiny_clip, threshold=0.0).scores(images, PROMPTS[:2])
    assert from_s3 == pytest.approx(local, abs=1e-5)


def test_bad_input_gives_one_clear_error(tiny_clip, tmp_path):
    clip = ClipScoreFilter(tiny_clip, threshold=0.0, device="cpu")
    with pytest.raises(FFRError, match="one prompt per image"):
        clip.scores(_images(2), PROMPTS[:1])
    with pytest.raises(FFRError, match="does not exist"):
        ClipScoreFilter(str(tmp_path / "missing"), threshold=0.0)
