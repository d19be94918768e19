"""UTKFace: target gender, bias age (old = 20–50 years, young = 5 or less; other ages are dropped).

The labels live in the file names, ``{age}_{gender}_{race}_{date}.jpg`` (gender 0 male, 1 female;
the aligned-and-cropped release appends ``.chip.jpg``). Images may sit directly under ``root`` or in
sub-folders (the in-the-wild release ships part1/part2/part3). Names that do not parse are skipped
with one warning that counts them. Bias ids follow FFR: 0 old, 1 young. Split: seeded 80/10/10; train
and val get FFR's forced-direction pre-downsampling (male–young and female–old become the majorities).
"""

from __future__ import annotations

import posixpath
import re
import warnings

import pandas as pd

from ffr.datasets.base import GroupedSplit, ReferenceCounts, reader
from ffr.datasets.ffr_splits import ffr_split_table
from ffr.datasets.readers import DatasetRoot, FFRSplitOptions, build_splits
from ffr.errors import FFRError
from ffr.groups import GroupSpec
from ffr.options import Field

CLASS_NAMES = ("Male", "Female")
BIAS_NAMES = ("old", "young")
OLD_AGES, YOUNG_MAX_AGE = (20, 50), 5
FFR_PRE_RATIO = 0.9
_NAME = re.compile(r"^(?P<age>\d{1,3})_(?P<gender>[01])_(?P<race>\d)_\d+")


def parse_name(filename: str) -> tuple[int, int] | None:
    """(age, gender) from a UTKFace file name, or None when the name does not follow the pattern."""
    match = _NAME.match(posixpath.basename(filename))
    return (int(match["age"]), int(match["gender"])) if match else None


def age_group(age: int) -> int | None:
    """0 old (20–50), 1 young (≤ 5), None for every other age (FFR drops them)."""
    if OLD_AGES[0] <= age <= OLD_AGES[1]:
        return 0
    return 1 if age <= YOUNG_MAX_AGE else None


class UTKFaceOptions(FFRSplitOptions):
    oppose_bias: bool = Field(True, description="FFR's forced-direction pre-downsampling (opposite majority biases "
                                                "per class); false keeps the natural correlation")


def _reference(options: UTKFaceOptions) -> ReferenceCounts | None:
    """FFR's UTKFace split as its code ships it: train and val cut to 0.9 in FFR's forced direction, test as is."""
    if not options.oppose_bias:
        return None
    return ReferenceCounts(
        "FFR's UTKFace split (mqraitem/From-Fake-to-Real data/utk_face_*.pkl: train at 0.9, test; val's minorities "
        "derived by the same 0.9 rule)", GroupSpec(CLASS_NAMES, BIAS_NAMES),
        {"train": {(0, 0): 103, (0, 1): 934, (1, 0): 5731, (1, 1): 636},
         "val": {(0, 0): 14, (0, 1): 119, (1, 0): 724, (1, 1): 81},
         "test": {(0, 0): 723, (0, 1): 103, (1, 0): 710, (1, 1): 121}},
        pixels=200 * 200)


@reader("utk-face", UTKFaceOptions, reference=_reference)
def utk_face(options: UTKFaceOptions) -> dict[str, GroupedSplit]:
    """UTKFace grouped by (gender, age group)."""
    bias_ratio = options.bias_ratio
    data = DatasetRoot(options.root, "utk-face")
    if options.split_file is not None:  # FFR's own splits, as published
        return build_splits(data, ffr_split_table(data, options.split_file, bias_ratio),
                            GroupSpec(CLASS_NAMES, BIAS_NAMES), bias_ratio=None, seed=options.seed,
                            verify=options.verify, check_files=False)
    keys = data.list_files()
    rows, malformed = [], []
    for key in keys:
        parsed = parse_name(key)
        if parsed is None:
            malformed.append(key)
            continue
        b = age_group(parsed[0])
        if b is not None:
            rows.append((key, parsed[1], b))
    if keys and len(malformed) == len(keys):
        raise FFRError(f"utk-face: none of the {len(keys)} image names under {data.uri!r} follow "
                       f"age_gender_race_date.jpg (e.g. {malformed[0]!r})")
    if malformed:
        warnings.warn(f"utk-face: skipped {len(malformed)} images whose names are not age_gender_race_date.jpg "
                      f"(e.g. {malformed[0]!r})", stacklevel=2)
    table = pd.DataFrame(rows, columns=["key", "y", "b"])
    pre = min(FFR_PRE_RATIO, float(bias_ratio)) if bias_ratio is not None else FFR_PRE_RATIO
    # keys come from the listing itself, so there is nothing to check for presence
    return build_splits(data, table, GroupSpec(CLASS_NAMES, BIAS_NAMES), bias_ratio=bias_ratio, seed=options.seed,
                        verify=options.verify, check_files=False,
                        oppose_bias_ratio=pre if options.oppose_bias else None)
