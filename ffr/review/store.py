"""Opening a review: migrate the database, then read or create its settings, raters and admin token; adding,
re-linking and revoking raters."""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from functools import cached_property

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from ffr.errors import FFRError
from ffr.review import migrate
from ffr.review.db import (
    Assignment,
    BrowserSession,
    Meta,
    Rater,
    ReviewImage,
    Vote,
    default_url,
    make_engine,
    make_private,
    session_factory,
)
from ffr.review.origins import check_public_url
from ffr.review.tokens import new_token, token_hash
from ffr.shards import read_groups

DEFAULT_VOTES = 5  # D3S: five workers per image
DEFAULT_TASK_SIZE = 25  # D3S: 25 images per HIT
DEFAULT_LEASE_S = 30 * 60


@dataclass(frozen=True)
class ReviewSettings:
    data_uri: str
    votes_per_image: int
    task_size: int
    lease_seconds: float
    admin_token_hash: str
    public_url: str = ""  # where browsers reach the app (a TLS proxy); "" = http://<the Host header>


@dataclass
class Review:
    """An open review database (engine + its settings)."""

    engine: Engine
    settings: ReviewSettings
    url: str

    @property
    def sessions(self):
        """Sessions for writes (on SQLite: BEGIN IMMEDIATE)."""
        return session_factory(self.engine)

    @cached_property
    def write_lock(self):
        """SQLite has one writer at a time; queueing writers on a lock in the server process wakes the next one
        at once, where SQLite's own busy handler would make them poll with sleeps of up to 100 ms."""
        return threading.Lock() if self.url.startswith("sqlite") else contextlib.nullcontext()

    @cached_property
    def readers(self):
        """Sessions for reads only: on SQLite a plain BEGIN, so pages and sign-ins never queue behind votes."""
        return session_factory(make_engine(self.url, immediate=False)) if self.url.startswith("sqlite") \
            else self.sessions


def _read_meta(engine: Engine) -> dict[str, str]:
    with session_factory(engine)() as s:
        return {m.key: m.value for m in s.scalars(select(Meta))}


def _settings(meta: dict[str, str]) -> ReviewSettings:
    return ReviewSettings(meta["data_uri"], int(meta["votes_per_image"]), int(meta["task_size"]),
                          float(meta["lease_seconds"]), meta["admin_token_hash"], meta.get("public_url", ""))


def _positive(name: str, value: int) -> int:
    if isinstance(value, bool) or int(value) < 1:
        raise FFRError(f"{name} = {value!r}; expected a positive integer")
    return int(value)


def open_review(data_uri: str, db_url: str | None = None, *, create: bool = False, votes_per_image: int | None = None,
                task_size: int | None = None, lease_seconds: float | None = None,
                public_url: str | None = None) -> tuple[Review, str | None]:
    """Migrate and open the review of ``data_uri``. With ``create``, a fresh database gets its settings and an
    admin token, which is returned once (None otherwise). K, N, the lease and the public URL given for an
    existing review replace the stored ones (K only upwards: votes already cast stay valid)."""
    read_groups(data_uri)  # one clear line if data_uri is not a generation output (before creating anything)
    if public_url is not None:
        public_url = check_public_url(public_url)
    url = db_url or default_url(data_uri)
    make_private(url)  # before SQLite touches it: 0600 in a 0700 folder (also tightens an older, looser file)
    engine = make_engine(url)
    try:
        migrate.upgrade(engine)
    except Exception as e:  # unreachable server, bad credentials, read-only file: the user's database
        first_line = str(e).splitlines()[0] if str(e) else ""
        raise FFRError(f"cannot migrate review database {url!r}: {type(e).__name__}: {first_line}") from None
    meta = _read_meta(engine)
    admin_token = None
    if not meta:
        if not create:
            raise FFRError(f"review database {url!r} is empty; run 'ffr review init --data {data_uri}' first")
        admin_token = new_token()
        meta = {"data_uri": data_uri, "votes_per_image": str(_positive("--votes", votes_per_image or DEFAULT_VOTES)),
                "task_size": str(_positive("--task-size", task_size or DEFAULT_TASK_SIZE)),
                "lease_seconds": str(float(lease_seconds or DEFAULT_LEASE_S)),
                "admin_token_hash": token_hash(admin_token), "public_url": public_url or "", "lock": "0"}
        with session_factory(engine).begin() as s:
            s.add_all([Meta(key=k, value=v) for k, v in meta.items()])
    elif meta["data_uri"] != data_uri:
        raise FFRError(f"review database {url!r} reviews {meta['data_uri']!r}, not {data_uri!r}; "
                       "pass --db for a separate database")
    else:
        changes = {}
        if votes_per_image is not None:
            if _positive("--votes", votes_per_image) < int(meta["votes_per_image"]):
                raise FFRError(f"--votes {votes_per_image} is below this review's {meta['votes_per_image']}; "
                               "votes already cast would exceed it")
            changes["votes_per_image"] = str(votes_per_image)
        if task_size is not None:
            changes["task_size"] = str(_positive("--task-size", task_size))
        if lease_seconds is not None:
            changes["lease_seconds"] = str(float(lease_seconds))
        if public_url is not None and public_url != meta.get("public_url", ""):
            changes["public_url"] = public_url
        if changes:
            with session_factory(engine).begin() as s:
                for k, v in changes.items():
                    s.merge(Meta(key=k, value=v))
            meta.update(changes)
    return Review(engine, _settings(meta), url), admin_token


def add_rater(review: Review, name: str) -> str:
    """A new rater; returns their token (shown once — only its hash is stored)."""
    name = name.strip()
    if not name or len(name) > 200:
        raise FFRError(f"rater name {name!r}; expected 1 to 200 characters")
    token = new_token()
    try:
        with review.sessions.begin() as s:
            s.add(Rater(name=name, token_hash=token_hash(token), created_at=time.time()))
    except IntegrityError:
        with review.sessions() as s:
            revoked = s.scalar(select(Rater.revoked_at).where(Rater.name == name))
        again = "was revoked; --reissue gives them a new link" if revoked else \
            "exists already; pick another name (or --reissue to replace the link)"
        raise FFRError(f"a rater named {name!r} {again}") from None
    return token


def _rater(s, name: str) -> Rater:
    rater = s.scalar(select(Rater).where(Rater.name == name))
    if rater is None:
        known = ", ".join(s.scalars(select(Rater.name).order_by(Rater.name).limit(20))) or "none yet"
        raise FFRError(f"no rater named {name!r} (raters: {known})")
    return rater


def reissue_rater(review: Review, name: str) -> str:
    """A fresh link for an existing (or revoked) rater: the old link and every browser signed in with it stop
    working; their votes stay theirs."""
    token = new_token()
    with review.sessions.begin() as s:
        rater = _rater(s, name)
        rater.token_hash = token_hash(token)
        rater.revoked_at = None
        s.execute(delete(BrowserSession).where(BrowserSession.rater_id == rater.id))
    return token


def revoke_rater(review: Review, name: str, drop_votes: bool = False) -> dict:
    """Remove a rater: their link and sessions stop working at once (also in a running server) and their open
    task goes back to the pool. With ``drop_votes`` their votes are deleted too and each affected image's vote
    count is recomputed from the votes left, so it is offered to other raters until it has K again. The rater's
    row stays (marked revoked) so the name is not silently reused."""
    with review.sessions.begin() as s:
        rater = _rater(s, name)
        rater.revoked_at = rater.revoked_at or time.time()
        s.execute(delete(BrowserSession).where(BrowserSession.rater_id == rater.id))
        voted = list(s.scalars(select(Vote.image_id).where(Vote.rater_id == rater.id)))
        if drop_votes:
            s.execute(delete(Vote).where(Vote.rater_id == rater.id))
            s.execute(delete(Assignment).where(Assignment.rater_id == rater.id))
            left = select(func.count()).where(Vote.image_id == ReviewImage.id).scalar_subquery()
            for chunk in range(0, len(voted), 500):  # bounded IN lists
                s.execute(update(ReviewImage).where(ReviewImage.id.in_(voted[chunk:chunk + 500]))
                          .values(n_votes=left).execution_options(synchronize_session=False))
        else:
            s.execute(delete(Assignment).where(Assignment.rater_id == rater.id, Assignment.voted.is_(False)))
    return {"rater": name, "votes": len(voted), "votes_dropped": len(voted) if drop_votes else 0}


def rotate_admin_token(review: Review) -> str:
    """A new admin link; the old link and every admin session stop working."""
    token = new_token()
    with review.sessions.begin() as s:
        s.get(Meta, "admin_token_hash").value = token_hash(token)
        s.execute(delete(BrowserSession).where(BrowserSession.is_admin.is_(True)))
    return token
