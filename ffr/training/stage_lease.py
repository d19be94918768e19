"""One trainer per shared run directory on a Ray cluster (Ray glue).

FFR's stage 1 is named by what it depends on (``pretrain_stage``), so every stage-2 method, sweep trial and
``ffr train`` job of the same seed and stage-1 settings shares one stage-1 run. Two of them reaching it at
once would train it twice into the same directory (clashing checkpoints, doubled metrics lines). A run
therefore holds a *lease* on the directory while it trains it: the others wait, then find it finished
(``ffr_result.json``) and reuse it.

The leases live in one detached named actor per cluster, so separate jobs (``ray job submit``), Tune trials
and Train drivers all see the same table. A lease expires unless its holder renews it, which a background
thread does while the holder lives: a holder that dies hard (a killed trial) frees the run after ``ttl_s``,
and the next waiter resumes it from its checkpoints.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
import warnings
from collections.abc import Iterator

import ray

from ffr.errors import FFRError

ACTOR_NAME = "ffr-run-leases"
NAMESPACE = "ffr"
TTL_S = 60.0  # a dead holder's lease frees after this long without a renewal
POLL_S = 2.0
ANSWER_S = 120.0  # the table answers in milliseconds; past this it is unreachable, and waiting longer hides why


def _restarted() -> bool:
    """Whether this actor is a restart. Ray 2.60's ``was_current_actor_reconstructed`` reads the deprecated
    ``RuntimeContext.actor_id`` itself, so each call printed a 3-line RayDeprecationWarning on every
    ``ffr train``; that warning is about Ray's own code, not ours, and is silenced for this one call."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # RayDeprecationWarning subclasses it
        return bool(ray.get_runtime_context().was_current_actor_reconstructed)


# max_task_retries: a call made while the table restarts waits for it (acquire and release are idempotent).
@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class RunLeases:
    """name → (holder, expiry)."""

    def __init__(self) -> None:
        self._held: dict[str, tuple[str, float]] = {}
        # A restarted table is empty while holders still train: grant nothing new until each holder has
        # renewed (re-entered its lease), i.e. for one TTL.
        self._grace_until = time.monotonic() + TTL_S if _restarted() else 0.0

    def acquire(self, name: str, holder: str, ttl_s: float, renewing: bool = False) -> str | None:
        """Take (or, ``renewing``, keep) the lease; returns None on success, else who holds it."""
        now = time.monotonic()
        current = self._held.get(name)
        mine = current is not None and current[0] == holder
        free = (current is None or current[1] < now) and now >= self._grace_until
        if mine or free or (renewing and current is None):  # the last: a holder re-entering a restarted table
            self._held[name] = (holder, now + ttl_s)
            return None
        return current[0] if current else "a holder from before the lease table restarted"

    def release(self, name: str, holder: str) -> None:
        if self._held.get(name, ("",))[0] == holder:
            del self._held[name]


def leases():
    """The cluster's lease table (created by the first caller; detached, so it outlives every job).

    Scheduled explicitly outside any placement group: the first caller is often a Tune trial, whose children
    Ray places in the trial's placement group by default; the table would then die with that trial's group
    and, restarting into a group that no longer exists, never answer again."""
    return RunLeases.options(name=ACTOR_NAME, namespace=NAMESPACE, get_if_exists=True, lifetime="detached",
                             scheduling_strategy="DEFAULT").remote()


def _ask(ref):
    try:
        return ray.get(ref, timeout=ANSWER_S)
    except ray.exceptions.GetTimeoutError:
        raise FFRError(f"the run lease table (actor {ACTOR_NAME!r} in namespace {NAMESPACE!r}) did not answer in "
                       f"{ANSWER_S:g} s; expected a live actor (see `ray list actors`)") from None


@contextlib.contextmanager
def hold(name: str, label: str = "", log=print, ttl_s: float = TTL_S, poll_s: float = POLL_S) -> Iterator[None]:
    """Hold the lease on ``name`` (a run directory) for the body; waits while another run holds it.

    Without a Ray cluster in this process (``executor: local`` outside Tune) there is no one to share with,
    and the body runs at once."""
    if not ray.is_initialized():
        yield
        return
    table, me = leases(), uuid.uuid4().hex
    waited = False
    while (holder := _ask(table.acquire.remote(name, me, ttl_s))) is not None:
        if not waited:
            log(f"[{label or name}] being trained by another run ({holder[:8]}); waiting for it to finish")
            waited = True
        time.sleep(poll_s)
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(ttl_s / 3):
            with contextlib.suppress(Exception):  # a missed renewal only shortens the lease
                _ask(table.acquire.remote(name, me, ttl_s, renewing=True))

    renewer = threading.Thread(target=renew, name="ffr-lease-renewal", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        with contextlib.suppress(Exception):
            _ask(table.release.remote(name, me))
