"""Opening a review: migrate the database, then read or create its settings, raters and admin token."""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from functools import cached_property

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from ffr.errors import FFRError
from ffr.review import migrate
from ffr.review.db import Meta, Rater, default_url, make_engine, session_factory
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
    secret: str
    admin_token_hash: str


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
                          float(meta["lease_seconds"]), meta["secret"], meta["admin_token_hash"])


def _positive(name: str, value: int) -> int:
    if isinstance(value, bool) or int(value) < 1:
        raise FFRError(f"{name} = {value!r}; expected a positive integer")
    return int(value)


def open_review(data_uri: str, db_url: str | None = None, *, create: bool = False, votes_per_image: int | None = None,
                task_size: int | None = None, lease_seconds: float | None = None) -> tuple[Review, str | None]:
    """Migrate and open the review of ``data_uri``. With ``create``, a fresh database gets its settings and an
    admin token, which is returned once (None otherwise). K, N and the lease given for an existing review
    replace the stored ones (K only upwards: votes already cast stay valid)."""
    read_groups(data_uri)  # one clear line if data_uri is not a generation output (before creating anything)
    url = db_url or default_url(data_uri)
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
                "lease_seconds": str(float(lease_seconds or DEFAULT_LEASE_S)), "secret": new_token() + new_token(),
                "admin_token_hash": token_hash(admin_token), "lock": "0"}
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
        if changes:
            with session_factory(engine).begin() as s:
                for k, v in changes.items():
                    s.get(Meta, k).value = v
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
        raise FFRError(f"a rater named {name!r} exists already; pick another name (or --reissue to replace the "
                       "link)") from None
    return token


def reissue_rater(review: Review, name: str) -> str:
    """A fresh link for an existing rater (the old one stops working); their votes stay theirs."""
    token = new_token()
    with review.sessions.begin() as s:
        rater = s.scalar(select(Rater).where(Rater.name == name))
        if rater is None:
            raise FFRError(f"no rater named {name!r}")
        rater.token_hash = token_hash(token)
    return token


def rotate_admin_token(review: Review) -> str:
    token = new_token()
    with review.sessions.begin() as s:
        s.get(Meta, "admin_token_hash").value = token_hash(token)
    return token
