"""SpuCo Animals: SpuCo's birds and dogs, 4 classes × 4 backgrounds with 8 non-empty groups.

Layout under ``root`` (the official SpuCo folders)::

    spuco_birds/{train,val,test}/{landbirds,waterbirds}/{land,water}/*
    spuco_dogs/{train,val,test}/{small_dogs,big_dogs}/{indoor,outdoor}/*

Birds only ever appear on land/water and dogs indoors/outdoors, so 8 of the 16 (class, background)
pairs are populated. The native splits are used; the native training bias is 0.95 (10,000 vs 500 per
class), so only ratios above that change anything (FFR allows ≥ 0.95).
"""

from __future__ import annotations

import pandas as pd

from ffr.datasets.base import SPLITS, GroupedSplit, ReferenceCounts, reader
from ffr.datasets.ffr_splits import ffr_split_table
from ffr.datasets.readers import DatasetRoot, FFRSplitOptions, build_splits
from ffr.groups import GroupSpec

CLASS_NAMES = ("landbird", "waterbird", "small_dog", "big_dog")
BIAS_NAMES = ("land", "water", "indoors", "outdoors")
# (top folder, class folder → y, background folder → b)
LAYOUT = (
    ("spuco_birds", {"landbirds": 0, "waterbirds": 1}, {"land": 0, "water": 1}),
    ("spuco_dogs", {"small_dogs": 2, "big_dogs": 3}, {"indoor": 2, "outdoor": 3}),
)
# The (class, background) pairs that exist: every bird on land or water, every dog indoors or outdoors. The
# synthetic recipe (pipelines/recipes/ffr_recipes.py) reads it, so generation budgets cover these 8 groups only.
POPULATED_GROUPS = tuple((y, b) for _, classes, backgrounds in LAYOUT for y in classes.values()
                         for b in backgrounds.values())
SPEC = GroupSpec(CLASS_NAMES, BIAS_NAMES, populated=POPULATED_GROUPS)


MAJORITY = {(0, 0), (1, 1), (2, 2), (3, 3)}  # landbird/land, waterbird/water, small dog/indoors, big dog/outdoors


def _reference(options: FFRSplitOptions) -> ReferenceCounts:
    def sizes(majority: int, minority: int) -> dict[tuple[int, int], int]:
        return {g: majority if g in MAJORITY else minority for g in POPULATED_GROUPS}

    return ReferenceCounts("SpuCo Animals' native splits (SpuCo; FFR's datasets/spuco_animals.py): 10,000/500 train, "
                           "500/25 val, 500/500 test per majority/minority group; image size a guess",
                           SPEC, {"train": sizes(10000, 500), "val": sizes(500, 25), "test": sizes(500, 500)},
                           pixels=256 * 256)


@reader("spuco-animals", FFRSplitOptions, reference=_reference)
def spuco_animals(options: FFRSplitOptions) -> dict[str, GroupedSplit]:
    """SpuCo Animals with its native train/val/test folders (or FFR's split files, ``split_file``)."""
    data = DatasetRoot(options.root, "spuco-animals")
    spec = SPEC
    if options.split_file is not None:  # FFR's own splits, as published
        return build_splits(data, ffr_split_table(data, options.split_file, options.bias_ratio), spec,
                            bias_ratio=None, seed=options.seed, verify=options.verify, check_files=False)
    frames = []
    for top, classes, backgrounds in LAYOUT:
        data.require_dir(top, "folder")
        for split in SPLITS:
            for class_dir, y in classes.items():
                for background_dir, b in backgrounds.items():
                    folder = data.require_dir(f"{top}/{split}/{class_dir}/{background_dir}", "group folder")
                    keys = data.list_files(folder)
                    frames.append(pd.DataFrame({"key": keys, "y": y, "b": b, "split": split}))
    table = pd.concat(frames, ignore_index=True)
    return build_splits(data, table, spec, bias_ratio=options.bias_ratio,
                        seed=options.seed, verify=options.verify, check_files=False)
