"""The contract every generator backend follows (one registry: ``pipelines.backends.create(name, **settings)``).

A backend is built once per Ray actor (heavy: loads a model) and then turns a batch of manifest rows into
PIL images, one per row, in order. Every row carries its own integer ``seed``; a backend must make the
image a pure function of (settings, row), so any image can be regenerated bit-identically from its id.
Backends import no Ray.
"""

from __future__ import annotations

from typing import Any, ClassVar

from PIL import Image

from ffr.registry import Registry

BACKENDS: Registry = Registry("generator backend")


class GeneratorBackend:
    name: ClassVar[str] = ""

    def __init__(self, **settings: Any) -> None:
        self.settings = settings

    @classmethod
    def check(cls, settings: dict[str, Any]) -> None:
        """Validate ``settings`` on the driver, before Ray starts, without loading anything heavy (FFRError).

        The default builds the backend, which suits cheap backends; model-loading ones override this."""
        cls(**settings)

    def generate(self, rows: list[dict], init_images: list[Image.Image] | None = None) -> list[Image.Image]:
        """rows: manifest rows (``prompt``, ``negative_prompt``, ``seed``, labels, generator settings).

        ``init_images``: one guide image per row for img2img recipes (None for text-to-image).
        """
        raise NotImplementedError
