"""Stage-2 methods, one registry: ``create(name, **hparams)``.

Importing this package registers every method module below; a new method is a new module plus one
import line here, and ``tests/test_methods.py`` walks the registry.
"""

from __future__ import annotations

from typing import Any

from ffr.methods import dfr, disentangle, erm, groupdro, jtt, resample, reweight  # noqa: F401  (registration)
from ffr.methods.base import FeatureFit, Features, Method, PreliminaryRun, search_spaces, searchable
from ffr.methods.registry import METHODS


def create(name: str, **hparams: Any) -> Method:
    """Build a method by name. ``n_groups`` and ``group_counts`` may be passed with the hyperparameters."""
    return METHODS.get(name)(**hparams)


def names() -> list[str]:
    return METHODS.names()


__all__ = ["create", "names", "FeatureFit", "Features", "Method", "PreliminaryRun", "search_spaces", "searchable",
           "METHODS"]
