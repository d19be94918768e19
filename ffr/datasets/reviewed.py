"""Readers' side of the review export: ``accepted_ids(data_uri)`` and the ``review`` reader option.

Any reader with a ``review`` option calls :func:`filter_reviewed`: ``None`` (default) keeps everything,
``"accepted"`` keeps only ids in ``<output>/review/accepted.parquet`` (written by ``ffr review export``,
:mod:`ffr.review.decisions`, which takes the file's place from here). It sits in the data layer so that readers
need not import the review web app.
"""

from __future__ import annotations

import pandas as pd

from ffr.errors import FFRError
from ffr.storage import filesystem, join

REVIEW_OPTIONS = (None, "accepted")
REVIEW_DIR = "review"
ACCEPTED_FILE = "accepted.parquet"


def accepted_ids(data_uri: str) -> set[str]:
    """The ids the review accepted; FFRError (one line) if no export exists."""
    fs, base = filesystem(data_uri)
    path = join(base, REVIEW_DIR, ACCEPTED_FILE)
    if not fs.exists(path):
        raise FFRError(f"{join(data_uri, REVIEW_DIR, ACCEPTED_FILE)!r} does not exist; run "
                       f"'ffr review export --data {data_uri}' first (or drop 'review: accepted')")
    with fs.open(path, "rb") as f:
        return set(pd.read_parquet(f, columns=["id"])["id"].astype(str))


def check_review_option(review: str | None) -> str | None:
    if review not in REVIEW_OPTIONS:
        raise FFRError(f"review option {review!r}; expected 'accepted' or null")
    return review


def filter_reviewed(table: pd.DataFrame, data_uri: str, review: str | None, id_column: str = "id") -> pd.DataFrame:
    """Rows of ``table`` that ``review`` keeps."""
    if check_review_option(review) is None:
        return table
    keep = accepted_ids(data_uri)
    return table[table[id_column].astype(str).isin(keep)]
