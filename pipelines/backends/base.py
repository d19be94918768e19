"""The contract every generator backend follows (one registry: ``pipelines.backends.create(name, settings)``).

A backend is built once per Ray actor (heavy: loads a model) and then turns a batch of manifest rows into
PIL images, one per row, in order. Every row carries its own integer ``seed`` and what to make (``steps``,
``guidance_scale``, ``strength``, ``width``, ``height``); the backend's ``Options`` (``backend.settings``) say only
how to run, and the run's one ``batch_size`` says how many rows go through one call. A backend must make the
image a pure function of (settings, row), so any image can be regenerated bit-identically from its id.
Backends import no Ray.
"""

from __future__ import annotations

from typing import ClassVar

from PIL import Image

from ffr.options import NoOptions, Options
from ffr.registry import Registry

BACKENDS: Registry = Registry("generator backend", plugins="ffr.backends")


class GeneratorBackend:
    name: ClassVar[str] = ""
    Options: ClassVar[type[Options]] = NoOptions  # backend.settings, validated by BACKENDS.options(...)

    def __init__(self, options: Options, batch_size: int = 8) -> None:
        self.options = options
        self.batch_size = int(batch_size)

    @classmethod
    def check(cls, options: Options) -> None:
        """Check on the driver, before Ray starts, what the options alone cannot say (FFRError), without
        loading anything heavy. The default builds the backend, which suits cheap backends; model-loading
        ones override this."""
        cls(options)

    @classmethod
    def prompt_warning(cls, recipe) -> str | None:
        """One line for a run whose images will not be what ``recipe``'s rows ask for (prompts, steps, guidance),
        saying what this backend makes instead; None when it makes what they ask. ``ffr generate`` prints it
        once, before anything runs. The CPU stand-ins (procedural, compositing) say so outside the recipes they
        were written for."""
        return None

    def generate(self, rows: list[dict], init_images: list[Image.Image] | None = None) -> list[Image.Image]:
        """rows: manifest rows (``prompt``, ``negative_prompt``, ``seed``, labels, generator settings).

        ``init_images``: one guide image per row for img2img recipes (None for text-to-image).
        """
        raise NotImplementedError
