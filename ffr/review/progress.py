"""Progress per group: votes cast against votes needed, and accepted images against the generation budget."""

from __future__ import annotations

import pandas as pd
from sqlalchemy import func, select

from ffr.review.db import Rater, Vote
from ffr.review.decisions import ACCEPT, PENDING, REJECT, budgets, decisions
from ffr.review.store import Review
from ffr.shards import read_groups, read_metadata

COLUMNS = ("group", "budget", "generated", "in_review", "votes", "votes_needed", "review_accepted",
           "review_rejected", "pending", "accepted", "of_budget")


def group_progress(review: Review, min_present: int | None = None) -> pd.DataFrame:
    """One row per group (named), as the admin page and ``ffr review progress`` show it."""
    data_uri = review.settings.data_uri
    spec = read_groups(data_uri)
    generated = read_metadata(data_uri).groupby("group").size()
    budget, _ = budgets(data_uri)
    d = decisions(review, min_present)
    rows = []
    for g in sorted(set(budget.index) | set(generated.index)):
        part = d[d["group"] == g]
        by = part["decision"].value_counts()
        gen = int(generated.get(g, 0))
        accepted = gen - int(by.get(REJECT, 0)) - int(by.get(PENDING, 0))
        rows.append({"group": spec.group_name(int(g)), "budget": int(budget.get(g, 0)), "generated": gen,
                     "in_review": len(part), "votes": int(part["n_votes"].sum()),
                     "votes_needed": len(part) * review.settings.votes_per_image,
                     "review_accepted": int(by.get(ACCEPT, 0)), "review_rejected": int(by.get(REJECT, 0)),
                     "pending": int(by.get(PENDING, 0)), "accepted": accepted,
                     "of_budget": f"{accepted}/{int(budget.get(g, 0))}"})
    return pd.DataFrame(rows, columns=list(COLUMNS))


def rater_votes(review: Review) -> list[tuple[str, int, bool]]:
    """(name, votes that count, revoked) per rater; a revoked rater's votes count unless they were dropped."""
    with review.sessions() as s:
        return [(name, int(n), revoked is not None) for name, n, revoked in s.execute(
            select(Rater.name, func.count(Vote.id), Rater.revoked_at).outerjoin(Vote, Vote.rater_id == Rater.id)
            .group_by(Rater.id, Rater.name, Rater.revoked_at).order_by(Rater.name))]
