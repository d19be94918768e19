"""The contract every generator backend follows (one registry: ``pipelines.backends.create(name, settings)``).

A backend is built once per Ray actor (heavy: loads a model) and then turns a batch of manifest rows into
PIL images, one per row, in order. Every row carries its own integer ``seed`` and what to make (``steps``,
``guidance_scale``, ``strength``, ``width``, ``height``); the backend's ``Options`` (``backend.settings``) say only
how to run, and the run's one ``batch_size`` says how many rows go through one call. A backend must make the
image a pure function of (settings, row), so any image can be regenerated bit-identically from its id.
Backends import no Ray.
"""

from __future__ import annotations

import json
import os
from typing import Any, ClassVar

from PIL import Image

from ffr.options import NoOptions, Options
from ffr.registry import Registry

BACKENDS: Registry = Registry("generator backend", plugins="ffr.backends")


class GeneratorBackend:
    name: ClassVar[str] = ""
    Options: ClassVar[type[Options]] = NoOptions  # backend.settings, validated by BACKENDS.options(...)
    # For the generator label (what a study compares): settings that change only speed or memory, not the
    # images, and the row settings (generator.*) the backend reads.
    execution_settings: ClassVar[frozenset[str]] = frozenset()
    generator_keys: ClassVar[tuple[str, ...]] = ()

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
    def check_run(cls, options: Options, generator: dict[str, Any]) -> dict[str, Any]:
        """On the driver, before Ray: check what every row will make (``generator``: the effective
        ``generator.*`` settings) against how the backend runs (FFRError, one line). Returns settings the driver
        completes and ships to every actor (recorded with the output), e.g. a decision every actor must share."""
        return {}

    @classmethod
    def generator_label(cls, settings: dict[str, Any], generator: dict[str, Any]) -> str:
        """One line naming the generator of an output, the same for every image: backend, model and the settings
        that change the images. Runs trained on outputs of different generators are different settings in
        ``ffr report`` (the generator is a study axis), runs on outputs of one generator are seeds of one."""
        parts = [cls.name]
        model = settings.get("model")
        if model:
            parts[0] += f":{_short_source(str(model))}"
        for key in sorted(settings):
            value = settings[key]
            if key == "model" or key in cls.execution_settings or value in (None, [], {}, False, "none"):
                continue
            parts.append(f"{key}={_compact(value)}")
        for key in cls.generator_keys:
            if generator.get(key) is not None:
                parts.append(f"{key}={_compact(generator[key])}")
        return " ".join(parts)

    def record(self, row: dict) -> dict[str, Any]:
        """Columns added to this image's record in the shard (how it was made, beyond the manifest row)."""
        return {}

    def sampler(self) -> dict | None:
        """What samples the images, for the output's record (shard stats, summary.json); None: no sampler."""
        return None

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


def _short_source(source: str) -> str:
    """A hub id stays; a local or s3:// folder is named by its last component (the same model in two places
    is one generator)."""
    if source.startswith(("/", ".", "~", "file://")) or "://" in source or source.count("/") > 1:
        return os.path.basename(source.rstrip("/")) or source
    return source


def _compact(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(v, dict) and "name" in v for v in value):
        # adapters: name(source)@scale
        return "+".join(f"{v['name']}({_short_source(str(v.get('path', '')))})@{float(v.get('scale', 1.0)):g}"
                        for v in value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
