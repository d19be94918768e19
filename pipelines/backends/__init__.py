"""Generator backends, one registry. Backend modules register on import (or lazily); one line per new module."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipelines.backends import compositing, procedural  # noqa: F401  (register themselves)
from pipelines.backends.base import BACKENDS, GeneratorBackend

# Imported on first use: it pulls in torch and diffusers, which procedural-only actors never need.
BACKENDS.register_lazy("diffusers", "pipelines.backends.diffusers_backend")


def create(name: str, settings: Mapping[str, Any] | None = None, batch_size: int = 8) -> GeneratorBackend:
    """Backend ``name`` with its ``backend.settings`` validated (one line naming a bad key) and the run's
    one ``batch_size`` (rows per call)."""
    return BACKENDS.get(name)(BACKENDS.options(name, settings, "backend.settings"), batch_size=batch_size)


__all__ = ["create", "BACKENDS", "GeneratorBackend"]
