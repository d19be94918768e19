"""Datasets with group labels, one registry: ``create(name, **options) -> dict[split, GroupedSplit]``."""

from __future__ import annotations

from typing import Any

from ffr.datasets.base import DATASETS, SPLITS, GroupedImageDataset, GroupedSplit

# Reader modules register themselves on import; add one import line per new reader module.


def create(name: str, **options: Any) -> dict[str, GroupedSplit]:
    return DATASETS.get(name)(**options)


__all__ = ["create", "DATASETS", "SPLITS", "GroupedSplit", "GroupedImageDataset"]
