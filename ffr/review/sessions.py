"""Browser sessions. Opening an invite (or admin) link exchanges the token in it for a fresh random session id,
which is all the cookie ever holds; the database keeps only the session id's hash, with an expiry. Revoking
a rater, re-issuing their link or rotating the admin link deletes the sessions they opened, so a running
server stops honouring them on the next request.
"""

from __future__ import annotations

import hmac
import time
from typing import TYPE_CHECKING

from sqlalchemy import delete, select

from ffr.review.db import BrowserSession, Meta, Rater
from ffr.review.tokens import new_token, token_hash

if TYPE_CHECKING:
    from ffr.review.store import Review

RATER_SESSION_S = 30 * 24 * 3600  # a rater signs in once a month at most
ADMIN_SESSION_S = 12 * 3600  # the admin link is the key to every export: a working day


def _start(s, rater_id: int | None, now: float) -> str:
    token = new_token()
    s.execute(delete(BrowserSession).where(BrowserSession.expires_at < now))  # housekeeping, bounded by sign-ins
    s.add(BrowserSession(token_hash=token_hash(token), rater_id=rater_id, is_admin=rater_id is None, created_at=now,
                         expires_at=now + (ADMIN_SESSION_S if rater_id is None else RATER_SESSION_S)))
    return token


def sign_in_rater(review: Review, invite_token: str) -> str | None:
    """A new session id for the (not revoked) rater whose invite token this is; None if there is none."""
    now = time.time()
    with review.write_lock, review.sessions.begin() as s:
        rater_id = s.scalar(select(Rater.id).where(Rater.token_hash == token_hash(invite_token),
                                                   Rater.revoked_at.is_(None)))
        return None if rater_id is None else _start(s, rater_id, now)


def sign_in_admin(review: Review, admin_token: str) -> str | None:
    """A new admin session id if ``admin_token`` is the current admin token (read now: it may have been rotated)."""
    now = time.time()
    with review.write_lock, review.sessions.begin() as s:
        stored = s.get(Meta, "admin_token_hash").value
        if not hmac.compare_digest(token_hash(admin_token), stored):
            return None
        return _start(s, None, now)


def session_rater(review: Review, session_token: str | None) -> Rater | None:
    """The rater signed in with this session id: unexpired, and the rater not revoked."""
    if not session_token:
        return None
    with review.readers() as s:
        return s.scalar(select(Rater).join(BrowserSession, BrowserSession.rater_id == Rater.id)
                        .where(BrowserSession.token_hash == token_hash(session_token),
                               BrowserSession.expires_at > time.time(), Rater.revoked_at.is_(None)))


def is_admin_session(review: Review, session_token: str | None) -> bool:
    if not session_token:
        return False
    with review.readers() as s:
        return s.scalar(select(BrowserSession.id).where(BrowserSession.token_hash == token_hash(session_token),
                                                        BrowserSession.is_admin.is_(True),
                                                        BrowserSession.expires_at > time.time())) is not None
