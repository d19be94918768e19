"""Generator backends, one registry. Backend modules register on import; add one line per new module."""

from __future__ import annotations

from typing import Any

from pipelines.backends import (
    diffusers_backend,  # noqa: F401  (registers 'diffusers')
    procedural,  # noqa: F401  (registers 'procedural')
)
from pipelines.backends.base import BACKENDS, GeneratorBackend


def create(name: str, **settings: Any) -> GeneratorBackend:
    return BACKENDS.get(name)(**settings)


__all__ = ["create", "BACKENDS", "GeneratorBackend"]
