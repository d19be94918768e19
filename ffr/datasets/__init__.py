"""Datasets with group labels, one registry: ``create(name, **options) -> dict[split, GroupedSplit]``.

Each reader declares its options as an ``Options`` model (ffr.options) beside its code; ``create`` validates
them, so a bad or unknown key is one line naming it (``dataset_options.bias_ratio``)."""

from __future__ import annotations

from typing import Any

# Reader modules register themselves on import; add one import line per new reader module.
import ffr.datasets.celeba_hq  # noqa: F401
import ffr.datasets.class_folder  # noqa: F401
import ffr.datasets.colored_digits  # noqa: F401
import ffr.datasets.d3s_backgrounds  # noqa: F401
import ffr.datasets.d3s_shift  # noqa: F401
import ffr.datasets.folder  # noqa: F401
import ffr.datasets.spuco_animals  # noqa: F401
import ffr.datasets.synthetic  # noqa: F401
import ffr.datasets.utk_face  # noqa: F401
import ffr.datasets.waterbirds  # noqa: F401
from ffr.datasets.base import DATASETS, SPLITS, GroupedImageDataset, GroupedSplit, ReferenceCounts


def create(name: str, **options: Any) -> dict[str, GroupedSplit]:
    return DATASETS.get(name)(DATASETS.options(name, options, "dataset_options"))


def reference_counts(name: str, **options: Any) -> ReferenceCounts | None:
    """The dataset's published group counts for these options (see ReferenceCounts), or None; reads no data."""
    entry = DATASETS.get(name)
    reference = getattr(entry, "reference", None)
    return None if reference is None else reference(DATASETS.options(name, options, "dataset_options"))


__all__ = ["create", "reference_counts", "DATASETS", "SPLITS", "GroupedSplit", "GroupedImageDataset",
           "ReferenceCounts"]
