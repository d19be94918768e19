"""Recording one vote: one transaction, idempotent against double submits, never more than K per image."""

from __future__ import annotations

import enum
import time

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from ffr.review.db import Assignment, ReviewImage, Vote
from ffr.review.store import ReviewSettings


class Outcome(enum.Enum):
    RECORDED = "recorded"
    DUPLICATE = "duplicate"  # this rater already voted on this image: the first vote stands
    NOT_ASSIGNED = "not-assigned"  # raters vote only on images they were given
    FULL = "full"  # the image got its K votes while this rater's lease had expired


def record_vote(sessions, rater_id: int, image_id: str, object_present: bool, unsafe: bool,
                settings: ReviewSettings) -> Outcome:
    """Insert the vote, bump the image's count and close the assignment — all or nothing."""
    try:
        with sessions.begin() as s:
            assignment = s.scalar(select(Assignment).where(Assignment.rater_id == rater_id,
                                                           Assignment.image_id == image_id))
            if assignment is None:
                return Outcome.NOT_ASSIGNED
            if assignment.voted:
                return Outcome.DUPLICATE
            # A conditional increment is the K cap: it takes the row (or database) lock, so it is exact
            # under concurrency, and it rolls back with the vote if anything below fails.
            bumped = s.execute(update(ReviewImage).where(ReviewImage.id == image_id,
                                                         ReviewImage.n_votes < settings.votes_per_image)
                               .values(n_votes=ReviewImage.n_votes + 1)).rowcount
            if bumped == 0:
                return Outcome.FULL
            s.add(Vote(image_id=image_id, rater_id=rater_id, object_present=bool(object_present),
                       unsafe=bool(unsafe), created_at=time.time()))
            assignment.voted = True
        return Outcome.RECORDED
    except IntegrityError:  # a concurrent double submit won the unique (image, rater) constraint
        return Outcome.DUPLICATE
