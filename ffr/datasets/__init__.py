"""Datasets with group labels, one registry: ``create(name, **options) -> dict[split, GroupedSplit]``."""

from __future__ import annotations

from typing import Any

# Reader modules register themselves on import; add one import line per new reader module.
import ffr.datasets.celeba_hq  # noqa: F401
import ffr.datasets.colored_digits  # noqa: F401
import ffr.datasets.d3s_shift  # noqa: F401
import ffr.datasets.folder  # noqa: F401
import ffr.datasets.spuco_animals  # noqa: F401
import ffr.datasets.synthetic  # noqa: F401
import ffr.datasets.utk_face  # noqa: F401
import ffr.datasets.waterbirds  # noqa: F401
from ffr.datasets.base import DATASETS, SPLITS, GroupedImageDataset, GroupedSplit


def create(name: str, **options: Any) -> dict[str, GroupedSplit]:
    return DATASETS.get(name)(**options)


__all__ = ["create", "DATASETS", "SPLITS", "GroupedSplit", "GroupedImageDataset"]
