"""The review database: tables and engine. Any SQLAlchemy URL works; SQLite is the default.

One database holds one review of one generation output (its URI is stored in ``meta``). Votes carry a
unique (image, rater) constraint, so a double submit can never produce a second vote, and ``images.n_votes``
is only ever changed in the same transaction as the vote row it counts.

The database holds the hashes of every credential (invite links, the admin link, browser sessions), so a SQLite
file is private: created 0600 in a 0700 folder, and tightened to 0600 if it was made earlier with looser modes.
"""

from __future__ import annotations

import contextlib
import logging
import os

from sqlalchemy import Boolean, Float, ForeignKey, Integer, String, UniqueConstraint, create_engine, event, update
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from ffr.errors import FFRError
from ffr.storage import is_remote

ID_LENGTH = 128
PRIVATE_DIR = "private"  # <output>/review/private/: the database only; exports stay in <output>/review/ for readers
DB_NAME = "review.sqlite"
SQLITE_SIDE_FILES = ("", "-wal", "-shm", "-journal")
log = logging.getLogger("ffr.review")


class Base(DeclarativeBase):
    pass


class Meta(Base):
    """Settings of this review (data URI, K, N, lease timeout, public URL, admin token hash) and the lock row."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(4096))


class Rater(Base):
    __tablename__ = "raters"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex; the token itself is never stored
    created_at: Mapped[float] = mapped_column(Float)
    # Revoked raters keep their row (their votes, unless dropped, still count) but can no longer sign in.
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True, default=None)


class BrowserSession(Base):
    """A signed-in browser. The cookie holds a random session id (only its hash is stored here), never the invite
    or admin token: a leaked cookie dies with its session, and revoking a rater or rotating the admin link ends
    every session it opened. ``rater_id`` is NULL for the admin."""

    __tablename__ = "sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    rater_id: Mapped[int | None] = mapped_column(ForeignKey("raters.id"), index=True, nullable=True)
    is_admin: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float, index=True)


class ReviewImage(Base):
    """An image chosen for review. ``order_key`` is a hash of the id, so tasks mix groups instead of id order."""

    __tablename__ = "images"
    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    group: Mapped[int] = mapped_column(Integer, index=True)
    y: Mapped[int] = mapped_column(Integer)
    b: Mapped[int] = mapped_column(Integer)
    order_key: Mapped[int] = mapped_column(Integer)
    n_votes: Mapped[int] = mapped_column(Integer, default=0, index=True)
    added_at: Mapped[float] = mapped_column(Float)


class Assignment(Base):
    """One image of one rater's task. Unvoted and older than the lease timeout = abandoned, offered again."""

    __tablename__ = "assignments"
    __table_args__ = (UniqueConstraint("rater_id", "image_id", name="uq_assignment_rater_image"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rater_id: Mapped[int] = mapped_column(ForeignKey("raters.id"), index=True)
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id"), index=True)
    task: Mapped[int] = mapped_column(Integer)
    position: Mapped[int] = mapped_column(Integer)
    assigned_at: Mapped[float] = mapped_column(Float, index=True)
    voted: Mapped[bool] = mapped_column(Boolean, default=False)


class Vote(Base):
    __tablename__ = "votes"
    __table_args__ = (UniqueConstraint("image_id", "rater_id", name="uq_vote_image_rater"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id"), index=True)
    rater_id: Mapped[int] = mapped_column(ForeignKey("raters.id"), index=True)
    object_present: Mapped[bool] = mapped_column(Boolean)
    unsafe: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[float] = mapped_column(Float)


def default_url(data_uri: str) -> str:
    """SQLite in a private folder beside a local output (``<output>/review/private/review.sqlite``), or in the
    working directory for S3 outputs (``./ffr-review/review.sqlite``).

    A database at the location used before the private folder (``<output>/review/review.sqlite``,
    ``./ffr-review.sqlite``) is still used where it is — moving a live SQLite file under a running server could
    lose votes — with its files tightened to 0600 and one line saying how to move it."""
    if is_remote(data_uri):
        folder, legacy = os.path.abspath("ffr-review"), os.path.abspath("ffr-review.sqlite")
    else:
        review_dir = os.path.join(os.path.abspath(data_uri.removeprefix("file://")), "review")
        folder, legacy = os.path.join(review_dir, PRIVATE_DIR), os.path.join(review_dir, DB_NAME)
    path = os.path.join(folder, DB_NAME)
    if not os.path.exists(path) and os.path.exists(legacy):
        log.warning("review database %s predates the private folder; stop the server, then move it (and its "
                    "-wal/-shm files) to %s/", legacy, folder)
        return f"sqlite:///{legacy}"
    return f"sqlite:///{path}"


def sqlite_path(url: str) -> str | None:
    """The file of a SQLite URL; None for other databases and in-memory SQLite."""
    try:
        parsed = make_url(url)
    except Exception:  # malformed: make_engine reports it
        return None
    database = parsed.database or ""
    if not parsed.drivername.startswith("sqlite") or database in ("", ":memory:") or database.startswith("file:"):
        return None
    return os.path.abspath(database)


def make_private(url: str) -> None:
    """Before SQLite opens the file: create its folder 0700 and the file 0600 (SQLite then creates the -wal and
    -shm files with the database file's mode), or tighten an existing file to 0600. Folders the user chose are
    never chmod-ed, only folders created here."""
    path = sqlite_path(url)
    if path is None:
        return
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        try:
            os.makedirs(folder, mode=0o700)
        except FileExistsError:
            pass
        except OSError as e:
            raise FFRError(f"cannot create the folder of review database {url!r}: {e}") from None
        os.chmod(folder, 0o700)  # makedirs' mode is masked by the umask
    try:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))  # an empty file is an empty SQLite database
    except OSError as e:
        raise FFRError(f"cannot create review database {url!r}: {e}") from None
    for suffix in SQLITE_SIDE_FILES:
        with contextlib.suppress(OSError):  # absent side file, or a file someone else owns: leave it
            if os.stat(path + suffix).st_mode & 0o077:
                os.chmod(path + suffix, 0o600)


def make_engine(url: str, immediate: bool = True) -> Engine:
    """An engine for ``url``. SQLite gets WAL (readers never wait for the writer), a busy timeout and, with
    ``immediate``, BEGIN IMMEDIATE transactions: a writer takes the write lock up front and waits for it,
    instead of failing with "database is locked" when it upgrades a read lock under load."""
    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 60},
                                   pool_size=10, max_overflow=30)

            @event.listens_for(engine, "connect")
            def _connect(dbapi_connection, _record) -> None:
                dbapi_connection.isolation_level = None  # SQLAlchemy, not the driver, begins transactions
                cursor = dbapi_connection.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                # NORMAL in WAL mode: a committed vote survives any crash of the server process; only a power
                # loss can drop the last commits (never corrupt the file). FULL costs one fsync per vote.
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.execute("PRAGMA foreign_keys=ON")
                cursor.close()

            @event.listens_for(engine, "begin")
            def _begin(conn) -> None:
                conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

            return engine
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=30)
    except Exception as e:  # unknown dialect, missing driver, malformed URL: the user's --db value
        raise FFRError(f"cannot open review database {url!r}: {type(e).__name__}: {str(e).splitlines()[0]}") from None


def session_factory(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)


def take_write_lock(session) -> None:
    """Serialize task assignment across server threads and processes with one row lock (portable: SQLite
    locks the database, PostgreSQL/MySQL lock the row) — two raters never get the last free slot of an image."""
    session.execute(update(Meta).where(Meta.key == "lock").values(value=Meta.value))
