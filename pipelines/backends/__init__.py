"""Generator backends, one registry. Backend modules register on import (or lazily); one line per new module."""

from __future__ import annotations

from typing import Any

from pipelines.backends import compositing, procedural  # noqa: F401  (register themselves)
from pipelines.backends.base import BACKENDS, GeneratorBackend

# Imported on first use: it pulls in torch and diffusers, which procedural-only actors never need.
BACKENDS.register_lazy("diffusers", "pipelines.backends.diffusers_backend")


def create(name: str, **settings: Any) -> GeneratorBackend:
    return BACKENDS.get(name)(**settings)


__all__ = ["create", "BACKENDS", "GeneratorBackend"]
