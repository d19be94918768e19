"""The veto rule, and the export it drives: ``<output>/review/accepted.parquet`` (+ decisions and a top-up).

Veto rule (D3S ``consolidate_amt_output.py``): any "unsafe" vote rejects; otherwise the image is accepted once
it has K votes of which at least m say the object is present. m defaults to K — all five say yes and nobody
flags it. An image whose "no" votes already make m unreachable is rejected early.

What is accepted: every image the generation filters accepted, minus the reviewed images the rule rejects,
minus the reviewed images still pending (not yet K votes). Images never selected for review (``sample`` and
``candidates`` selections) are kept: review removes what it found, it does not vouch for the rest.
"""

from __future__ import annotations

import io
import json
import time

import pandas as pd
from sqlalchemy import case, func, select

from ffr.datasets.reviewed import ACCEPTED_FILE, REVIEW_DIR
from ffr.errors import FFRError
from ffr.review.db import Meta, ReviewImage, Vote
from ffr.review.store import Review
from ffr.shards import read_groups, read_metadata
from ffr.storage import ensure_dir, filesystem, join, write_atomic

DECISIONS_FILE = "decisions.parquet"
LAST_EXPORT_M = "last_export_min_present"  # meta key: the m of the files on disk, to redo them after a revoke
TOPUP_FILE = "topup.json"
ACCEPT, REJECT, PENDING = "accept", "reject", "pending"


def veto_decision(n_votes: int, n_present: int, n_unsafe: int, k: int, m: int) -> str:
    if n_unsafe > 0:
        return REJECT
    if (n_votes - n_present) > k - m:  # too many "absent" votes: m "present" votes out of K are out of reach
        return REJECT
    if n_votes >= k and n_present >= m:
        return ACCEPT
    return PENDING


def check_min_present(m: int | None, k: int) -> int:
    m = k if m is None else m
    if isinstance(m, bool) or not 1 <= int(m) <= k:
        raise FFRError(f"--min-present {m!r}; expected 1..{k} (the votes per image); default {k} is D3S's rule")
    return int(m)


def decisions(review: Review, min_present: int | None = None) -> pd.DataFrame:
    """One row per reviewed image: id, y, b, group, n_votes, n_present, n_unsafe, decision."""
    k = review.settings.votes_per_image
    m = check_min_present(min_present, k)
    with review.sessions() as s:
        counts = (select(Vote.image_id, func.sum(case((Vote.object_present, 1), else_=0)).label("n_present"),
                         func.sum(case((Vote.unsafe, 1), else_=0)).label("n_unsafe"))
                  .group_by(Vote.image_id).subquery())
        rows = s.execute(select(ReviewImage.id, ReviewImage.y, ReviewImage.b, ReviewImage.group, ReviewImage.n_votes,
                                func.coalesce(counts.c.n_present, 0), func.coalesce(counts.c.n_unsafe, 0))
                         .outerjoin(counts, counts.c.image_id == ReviewImage.id).order_by(ReviewImage.id)).all()
    df = pd.DataFrame(rows, columns=["id", "y", "b", "group", "n_votes", "n_present", "n_unsafe"])
    df["decision"] = [veto_decision(int(v), int(p), int(u), k, m)
                      for v, p, u in zip(df["n_votes"], df["n_present"], df["n_unsafe"])]
    return df


def budgets(data_uri: str) -> tuple[pd.Series, bool]:
    """(images per group that generation was asked for, whether they count *accepted* images).

    Outputs written by "generate to a target" record their targets (accepted images per group) in
    ``manifest/manifest.json``; older outputs budgeted manifest rows, so their rows per group are the budget."""
    fs, base = filesystem(data_uri)
    info_path = join(base, "manifest", "manifest.json")
    if fs.exists(info_path):
        targets = json.loads(fs.cat_file(info_path)).get("targets")
        if targets:
            return pd.Series({int(g): int(n) for g, n in targets.items()}).sort_index(), True
    return read_metadata(data_uri, accepted_only=False).groupby("group").size(), False


def _parquet_bytes(df: pd.DataFrame) -> bytes:
    sink = io.BytesIO()
    df.to_parquet(sink, index=False)
    return sink.getvalue()


def export(review: Review, min_present: int | None = None) -> dict:
    """Write accepted.parquet, decisions.parquet and topup.json under ``<output>/review/``; returns a summary."""
    data_uri = review.settings.data_uri
    decided = decisions(review, min_present)
    generated = read_metadata(data_uri)[["id", "y", "b", "group"]].astype({"id": str})
    dropped = set(decided.loc[decided["decision"] != ACCEPT, "id"])
    accepted = generated[~generated["id"].isin(dropped)].sort_values("id")
    fs, base = filesystem(data_uri)
    ensure_dir(fs, join(base, REVIEW_DIR))
    write_atomic(fs, join(base, REVIEW_DIR, DECISIONS_FILE), _parquet_bytes(decided))
    topup = topup_request(data_uri, decided)
    write_atomic(fs, join(base, REVIEW_DIR, TOPUP_FILE), json.dumps(topup, indent=2).encode())
    # accepted.parquet last: readers see a complete export or the previous one, never a mix.
    write_atomic(fs, join(base, REVIEW_DIR, ACCEPTED_FILE),
                 _parquet_bytes(pd.DataFrame({"id": accepted["id"].astype(str)})))
    m = check_min_present(min_present, review.settings.votes_per_image)
    with review.sessions.begin() as s:
        s.merge(Meta(key=LAST_EXPORT_M, value=str(m)))
    by = decided["decision"].value_counts()
    return {"accepted": int(len(accepted)), "generated": int(len(generated)), "reviewed": int(len(decided)),
            "review_accepted": int(by.get(ACCEPT, 0)), "review_rejected": int(by.get(REJECT, 0)),
            "review_pending": int(by.get(PENDING, 0)), "min_present": m,
            "path": join(data_uri, REVIEW_DIR, ACCEPTED_FILE), "topup": join(data_uri, REVIEW_DIR, TOPUP_FILE),
            "exported_at": time.time()}


def export_again(review: Review) -> dict | None:
    """Redo the export on disk with the rule it was made with (after votes were dropped); None if there is none."""
    fs, base = filesystem(review.settings.data_uri)
    if not fs.exists(join(base, REVIEW_DIR, ACCEPTED_FILE)):
        return None
    with review.sessions() as s:
        stored = s.get(Meta, LAST_EXPORT_M)
    return export(review, int(stored.value) if stored else None)


def topup_request(data_uri: str, decided: pd.DataFrame) -> dict:
    """New ids for the same groups. A group's shortfall is its budget minus the images review left it (pending
    ones count as kept: finish the review first); the new budget asks generation for that many more, which a
    generation extended to the larger budget writes under new ids, leaving every existing image as it is."""
    spec = read_groups(data_uri)
    budget, counts_accepted = budgets(data_uri)
    generated = read_metadata(data_uri).groupby("group").size()
    rejected = decided[decided["decision"] == REJECT]
    rejected_per_group = rejected.groupby("group").size()
    per_group, shortfall = {}, {}
    for g, n in budget.items():
        y, b = spec.decode(int(g))
        kept = int(generated.get(g, 0)) - int(rejected_per_group.get(g, 0))
        missing = max(int(n) - kept, 0)
        # targets of accepted images grow from what generation accepted; a rows budget grows from its rows
        per_group[f"{y},{b}"] = (int(generated.get(g, 0)) if counts_accepted else int(n)) + missing
        if missing:
            shortfall[f"{y},{b}"] = missing
    override = json.dumps(per_group, separators=(",", ":"))
    return {"data": data_uri, "shortfall": shortfall, "budget": {"per_group": per_group},
            "rejected_ids": rejected["id"].astype(str).tolist(),
            "command": f"ffr generate --config <the config that made {data_uri}> output={data_uri} "
                       f"'budget.per_group={override}'"}
