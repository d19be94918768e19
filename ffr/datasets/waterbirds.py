"""Waterbirds in the WILDS layout (``waterbird_complete95_forest2water2``).

``root/metadata.csv`` has one row per image with ``img_filename`` (relative to root), ``y`` (0 landbird,
1 waterbird), ``place`` (0 land, 1 water) and ``split`` (0/1/2 = train/val/test). The native splits
are kept; the native training set is already at bias ratio 0.95.
"""

from __future__ import annotations

import io

import pandas as pd

from ffr.datasets.base import GroupedSplit, ReferenceCounts, reader
from ffr.datasets.readers import DatasetRoot, ReaderOptions, build_splits, integer_column, normalize_split_names
from ffr.errors import FFRError
from ffr.groups import GroupSpec

CLASS_NAMES = ("landbird", "waterbird")
BIAS_NAMES = ("land", "water")
METADATA_FILE = "metadata.csv"
COLUMNS = ("img_filename", "y", "place", "split")


def read_metadata_csv(data: DatasetRoot, rel: str, required: tuple[str, ...]) -> pd.DataFrame:
    """A CSV under the root with the required columns present; one error line otherwise."""
    where = data.uri_of(rel)
    try:
        table = pd.read_csv(io.BytesIO(data.read_bytes(rel, "metadata file")))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise FFRError(f"{data.dataset}: metadata file {where!r} is not a readable CSV ({type(e).__name__})") from None
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise FFRError(f"{data.dataset}: metadata file {where!r} lacks columns {missing}; "
                       f"expected {list(required)}")
    return table


def _reference(options: ReaderOptions) -> ReferenceCounts:
    return ReferenceCounts("Waterbirds' official splits (Sagawa et al. 2020, waterbird_complete95_forest2water2); "
                           "image size a guess", GroupSpec(CLASS_NAMES, BIAS_NAMES),
                           {"train": {(0, 0): 3498, (0, 1): 184, (1, 0): 56, (1, 1): 1057},
                            "val": {(0, 0): 467, (0, 1): 466, (1, 0): 133, (1, 1): 133},
                            "test": {(0, 0): 2255, (0, 1): 2255, (1, 0): 642, (1, 1): 642}}, pixels=400 * 300)


@reader("waterbirds", ReaderOptions, reference=_reference)
def waterbirds(options: ReaderOptions) -> dict[str, GroupedSplit]:
    """Waterbirds grouped by (bird type, place), native splits."""
    data = DatasetRoot(options.root, "waterbirds")
    meta = read_metadata_csv(data, METADATA_FILE, COLUMNS)
    where = data.uri_of(METADATA_FILE)
    table = pd.DataFrame({
        "key": meta["img_filename"].astype(str).str.lstrip("/"),
        "y": integer_column(meta, "y", where),
        "b": integer_column(meta, "place", where),
        "split": normalize_split_names(meta["split"], where),
    })
    return build_splits(data, table, GroupSpec(CLASS_NAMES, BIAS_NAMES), bias_ratio=options.bias_ratio,
                        seed=options.seed, verify=options.verify)
