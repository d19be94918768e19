"""Tasks: N images per rater, so that each image gets K votes from K distinct raters, fewest votes first.

An image's load = its votes + its live leases (assigned, unvoted, younger than the lease timeout). A rater
gets images with load < K that they have never been given, ordered by (votes, load, a hash of the id).
An abandoned task's leases expire, which frees the images for others; the whole choice runs under one
write lock, so two raters asking at once never both take an image's last free slot.
"""

from __future__ import annotations

import time

from sqlalchemy import and_, case, delete, exists, func, select

from ffr.review.db import Assignment, Rater, ReviewImage, take_write_lock
from ffr.review.store import ReviewSettings


def open_task(session, rater_id: int, settings: ReviewSettings, now: float | None = None) -> tuple[int, list[str]]:
    """(task number, unvoted image ids in order) of the rater's current task; a new task when the last one is
    finished or expired. Empty list = nothing left for this rater. Commits."""
    now = time.time() if now is None else now
    cutoff = now - settings.lease_seconds
    with session.begin():
        take_write_lock(session)
        if session.scalar(select(Rater.revoked_at).where(Rater.id == rater_id)) is not None:
            return 0, []  # revoked while this request was on its way: no new leases for them
        current = session.execute(
            select(Assignment.task, Assignment.image_id)
            .where(Assignment.rater_id == rater_id, Assignment.voted.is_(False), Assignment.assigned_at > cutoff)
            .order_by(Assignment.task, Assignment.position)).all()
        if current:
            task = current[0].task
            return task, [r.image_id for r in current if r.task == task]
        # The rater's own abandoned images go back to the pool (and may come back to them later).
        session.execute(delete(Assignment).where(Assignment.rater_id == rater_id, Assignment.voted.is_(False)))
        live = (select(Assignment.image_id, func.count().label("n"))
                .where(Assignment.voted.is_(False), Assignment.assigned_at > cutoff)
                .group_by(Assignment.image_id).subquery())
        load = ReviewImage.n_votes + func.coalesce(live.c.n, 0)
        mine = exists().where(and_(Assignment.rater_id == rater_id, Assignment.image_id == ReviewImage.id))
        ids = list(session.scalars(
            select(ReviewImage.id).outerjoin(live, live.c.image_id == ReviewImage.id)
            .where(load < settings.votes_per_image, ~mine)
            .order_by(ReviewImage.n_votes, load, ReviewImage.order_key, ReviewImage.id)
            .limit(settings.task_size)))
        if not ids:
            return 0, []
        task = (session.scalar(select(func.max(Assignment.task)).where(Assignment.rater_id == rater_id)) or 0) + 1
        session.add_all([Assignment(rater_id=rater_id, image_id=i, task=task, position=p, assigned_at=now, voted=False)
                         for p, i in enumerate(ids)])
        return task, ids


def task_progress(session, rater_id: int, task: int) -> tuple[int, int]:
    """(voted, total) images of one task of a rater."""
    total, voted = session.execute(select(func.count(), func.sum(case((Assignment.voted, 1), else_=0)))
                                   .where(Assignment.rater_id == rater_id, Assignment.task == task)).one()
    return int(voted or 0), int(total or 0)
