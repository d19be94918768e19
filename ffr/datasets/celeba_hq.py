"""CelebA-HQ in the CelebAMask-HQ layout: target ``Smiling``, bias ``Male`` by default (as in FFR).

Layout under ``root``::

    CelebA-HQ-img/0.jpg ... 29999.jpg
    CelebAMask-HQ-attribute-anno.txt   line 1: row count; line 2: the 40 attribute names;
                                       then "<filename> v1 ... v40" with values 1 / -1

Any two attributes can be target and bias. The split is a seeded 80/10/10 (FFR used ``os.listdir`` order,
which is not reproducible). Train and val get FFR's forced-direction pre-downsampling at 0.9 (or at the
bias ratio if lower) so the two classes have *opposite* majority biases, then the bias ratio.
"""

from __future__ import annotations

import pandas as pd

from ffr.datasets.base import GroupedSplit, ReferenceCounts, reader
from ffr.datasets.ffr_splits import ffr_split_table
from ffr.datasets.readers import DatasetRoot, FFRSplitOptions, build_splits
from ffr.errors import FFRError
from ffr.groups import GroupSpec
from ffr.options import Field

IMAGE_DIR = "CelebA-HQ-img"
ANNOTATION_FILE = "CelebAMask-HQ-attribute-anno.txt"
FFR_PRE_RATIO = 0.9  # FFR pre-downsamples train/val to this ratio with forced directions before make_harder


def _names(attribute: str) -> tuple[str, str]:
    """(name for -1, name for 1); gender has proper names, other attributes are 'not X' / 'X'."""
    return ("Female", "Male") if attribute == "Male" else (f"not {attribute}", attribute)


# The groups with the default target and bias (FFR's): recipes that make synthetic rows for them import these.
CLASS_NAMES, BIAS_NAMES = _names("Smiling"), _names("Male")


def parse_annotations(text: str, where: str) -> pd.DataFrame:
    """The attribute file → DataFrame indexed by filename, one 0/1 column per attribute."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        raise FFRError(f"attribute file {where!r} has {len(lines)} lines; expected a count, a header and rows")
    try:
        declared = int(lines[0].split()[0])
    except ValueError:
        raise FFRError(f"attribute file {where!r} line 1 is {lines[0][:40]!r}; expected the row count") from None
    names = lines[1].split()
    rows, files = [], []
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if len(fields) != len(names) + 1 or any(v not in ("1", "-1") for v in fields[1:]):
            raise FFRError(f"attribute file {where!r} line {number} is malformed; expected a filename and "
                           f"{len(names)} values of 1 or -1")
        files.append(fields[0])
        rows.append([v == "1" for v in fields[1:]])
    if len(rows) != declared:
        raise FFRError(f"attribute file {where!r} declares {declared} rows but holds {len(rows)}; is it truncated?")
    return pd.DataFrame(rows, index=files, columns=names).astype("int64")


class CelebaHQOptions(FFRSplitOptions):
    target: str = Field("Smiling", description="the attribute to predict (class)")
    bias: str = Field("Male", description="the spurious attribute (bias)")
    oppose_bias: bool = Field(True, description="FFR's forced-direction pre-downsampling (opposite majority biases "
                                                "per class); false keeps the natural correlation")


def _reference(options: CelebaHQOptions) -> ReferenceCounts | None:
    """FFR's CelebA-HQ split (Smiling × Male) as its code ships it: train and val already cut to 0.9 in FFR's
    forced direction, test as is."""
    if (options.target, options.bias) != ("Smiling", "Male") or not options.oppose_bias:
        return None
    return ReferenceCounts(
        "FFR's CelebA-HQ split (mqraitem/From-Fake-to-Real data/celeba_Smiling_*.pkl: train at 0.9, test; val's "
        "minorities derived by the same 0.9 rule)", GroupSpec(CLASS_NAMES, BIAS_NAMES),
        {"train": {(0, 0): 592, (0, 1): 5335, (1, 0): 7797, (1, 1): 866},
         "val": {(0, 0): 74, (0, 1): 666, (1, 0): 989, (1, 1): 110},
         "test": {(0, 0): 914, (0, 1): 693, (1, 0): 943, (1, 1): 450}},
        pixels=1024 * 1024)


@reader("celeba-hq", CelebaHQOptions, reference=_reference)
def celeba_hq(options: CelebaHQOptions) -> dict[str, GroupedSplit]:
    """CelebA-HQ grouped by (target attribute, bias attribute)."""
    target, bias, bias_ratio = options.target, options.bias, options.bias_ratio
    data = DatasetRoot(options.root, "celeba-hq")
    table = parse_annotations(data.read_text(ANNOTATION_FILE, "attribute file"), data.uri_of(ANNOTATION_FILE))
    data.require_dir(IMAGE_DIR, "image directory")
    for role, attribute in (("target", target), ("bias", bias)):
        if attribute not in table.columns:
            raise FFRError(f"celeba-hq: {role} attribute {attribute!r} is unknown; expected one of: "
                           f"{', '.join(table.columns)}")
    if target == bias:
        raise FFRError(f"celeba-hq: target and bias are both {target!r}; expected two different attributes")
    rows = pd.DataFrame({"key": [f"{IMAGE_DIR}/{name}" for name in table.index],
                         "y": table[target].to_numpy(), "b": table[bias].to_numpy()})
    spec = GroupSpec(_names(target), _names(bias))
    if options.split_file is not None:  # FFR's own splits: as published, checked against the attribute file
        split = ffr_split_table(data, options.split_file, bias_ratio)
        labels = rows.set_index("key").reindex(split["key"])
        wrong = (labels["y"].to_numpy() != split["y"].to_numpy()) | (labels["b"].to_numpy() != split["b"].to_numpy())
        if wrong.any():
            raise FFRError(f"celeba-hq: split_file labels disagree with {ANNOTATION_FILE} (target {target!r}, bias "
                           f"{bias!r}) for {int(wrong.sum())} images, e.g. {split['key'][wrong].iloc[0]!r}; expected "
                           "the target and bias the split files were made with")
        return build_splits(data, split, spec, bias_ratio=None, seed=options.seed, verify=options.verify,
                            check_files=False)
    pre = min(FFR_PRE_RATIO, float(bias_ratio)) if bias_ratio is not None else FFR_PRE_RATIO
    return build_splits(data, rows, spec, bias_ratio=bias_ratio, seed=options.seed, verify=options.verify,
                        oppose_bias_ratio=pre if options.oppose_bias else None)
