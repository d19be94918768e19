"""Which generated images go to review: ``all``, a seeded ``sample`` per group, or the ``candidates`` that the
per-background evaluation marks — the images every evaluated model misclassifies at top-1 (D3S sent the val
images that all 7 of its models got wrong; ``find_amt_candidates.py``).
"""

from __future__ import annotations

import hashlib
import time

import numpy as np
import pandas as pd
from sqlalchemy import select

from ffr.errors import FFRError
from ffr.review.db import ReviewImage
from ffr.shards import read_metadata
from ffr.storage import filesystem

SELECTIONS = ("all", "sample", "candidates")
PREDICTION_COLUMNS = ("id", "model", "y", "top5")


def candidate_ids(predictions: str) -> set[str]:
    """Ids that every model in ``predictions.parquet`` (i13's contract) misclassifies at top-1."""
    fs, inner = filesystem(predictions)
    if not fs.exists(inner):
        raise FFRError(f"predictions file {predictions!r} does not exist (expected <eval out>/predictions.parquet)")
    with fs.open(inner, "rb") as f:
        df = pd.read_parquet(f)
    missing = [c for c in PREDICTION_COLUMNS if c not in df.columns]
    if missing:
        raise FFRError(f"predictions file {predictions!r} lacks column(s) {missing}; "
                       f"expected {list(PREDICTION_COLUMNS)}")
    top1 = df["top5"].map(lambda t: int(t[0]) if len(t) else -1)
    wrong = (top1 != df["y"].astype(int)).groupby(df["id"].astype(str)).all()
    return set(wrong.index[wrong.to_numpy()])


def choose(data_uri: str, how: str = "all", per_group: int | None = None, predictions: str | None = None,
           seed: int = 0) -> pd.DataFrame:
    """The metadata rows (id, y, b, group) of the images to review, sorted by id."""
    meta = read_metadata(data_uri)[["id", "y", "b", "group"]].copy()
    meta["id"] = meta["id"].astype(str)
    meta = meta.sort_values("id").reset_index(drop=True)
    if how == "all":
        return meta
    if how == "sample":
        if per_group is None or per_group < 1:
            raise FFRError(f"--per-group {per_group!r}; selection 'sample' needs a positive number of images per group")
        rng = np.random.default_rng([seed, 14])
        picked = [part.iloc[np.sort(rng.choice(len(part), min(per_group, len(part)), replace=False))]
                  for _, part in meta.groupby("group", sort=True)]
        return pd.concat(picked).sort_values("id").reset_index(drop=True)
    if how == "candidates":
        if not predictions:
            raise FFRError("selection 'candidates' needs --predictions <eval out>/predictions.parquet")
        wanted = candidate_ids(predictions)
        out = meta[meta["id"].isin(wanted)].reset_index(drop=True)
        if out.empty:
            raise FFRError(f"no image of {data_uri!r} is misclassified by every model in {predictions!r}")
        return out
    raise FFRError(f"selection {how!r}; expected one of {', '.join(SELECTIONS)}")


def _order_key(sample_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(sample_id.encode(), digest_size=4).digest(), "big") >> 1


def add_images(session, rows: pd.DataFrame) -> int:
    """Put ``rows`` under review (images already there are kept as they are); returns how many were new."""
    have = set(session.scalars(select(ReviewImage.id)))
    now = time.time()
    new = [ReviewImage(id=str(r.id), group=int(r.group), y=int(r.y), b=int(r.b), order_key=_order_key(str(r.id)),
                       n_votes=0, added_at=now) for r in rows.itertuples() if str(r.id) not in have]
    session.add_all(new)
    return len(new)
