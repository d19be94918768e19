"""Output filters: every image gets a verdict (kept, or the reason it was dropped) — nothing is silently lost.

- ``black``: a (near-)black image, what a diffusion safety checker returns for a flagged sample.
- ``grayscale``: FFR's rule (``is_grayscale`` in generation_code/): with ImageStat sums per channel,
  |mean of the three sums − red sum| < threshold. FFR's thresholds were raw sums over a 512×512 image;
  here the threshold is per pixel (FFR's value / 512²), so the rule means the same at any image size.
- ``clip_score``: optional; CLIP image–text similarity (×100) under a threshold, when a CLIP model is given.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

BLACK_MEAN = 4.0  # mean pixel value (0–255) under which an image counts as black


@dataclass
class Verdict:
    accepted: bool
    reason: str = ""  # empty when accepted
    clip_score: float | None = None


def color_gap(image: Image.Image) -> float:
    """|mean of channel sums − red sum| / pixels: 0 for a gray image, large for a strongly colored one."""
    a = np.asarray(image.convert("RGB"), dtype=np.float64)
    sums = a.reshape(-1, 3).sum(axis=0)
    return float(abs(sums.mean() - sums[0]) / (a.shape[0] * a.shape[1]))


def pixel_verdict(image: Image.Image, gray_threshold: float) -> Verdict:
    if float(np.asarray(image.convert("L"), dtype=np.float32).mean()) < BLACK_MEAN:
        return Verdict(False, "black")
    if gray_threshold > 0 and color_gap(image) < gray_threshold:
        return Verdict(False, "grayscale")
    return Verdict(True)


class Filters:
    """The filters of one run; built once per worker (loading CLIP is heavy)."""

    def __init__(self, gray_threshold: float, clip_model: str | None = None, clip_threshold: float = 20.0) -> None:
        self.gray_threshold = float(gray_threshold)
        self.clip_threshold = float(clip_threshold)
        self.clip = None
        if clip_model:
            from pipelines.clip_filter import ClipScoreFilter  # optional: only runs that ask for CLIP load it

            self.clip = ClipScoreFilter(clip_model, clip_threshold)

    def __call__(self, images: list[Image.Image], prompts: list[str]) -> list[Verdict]:
        verdicts = [pixel_verdict(im, self.gray_threshold) for im in images]
        if self.clip is not None:
            scores = self.clip.scores(images, prompts)
            for v, s in zip(verdicts, scores):
                v.clip_score = float(s)
                if v.accepted and s < self.clip_threshold:
                    v.accepted, v.reason = False, "clip_score"
        return verdicts
