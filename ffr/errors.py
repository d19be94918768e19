"""The one exception type for user mistakes, and how to find it again after Ray has wrapped it.

Anything a user can get wrong (a config value, a path, a name) raises :class:`FFRError` with a message
that names the bad value and what was expected. The CLI prints it as a single line and exits 2; every
other exception is a bug and keeps its traceback.

Raised inside Ray (an actor of Ray Data, a Ray Train worker, a Tune trial), the error comes back wrapped:
``RayTaskError`` subclasses *both* itself and the cause's class (so ``isinstance(e, FFRError)`` holds but
``str(e)`` is the remote traceback), Ray Data re-raises it ``from`` a ``UserCodeException``, Ray Train puts
it in ``WorkerGroupError.worker_failures`` and Tune in ``TuneError``/``TrainingFailedError`` chains.
:func:`user_error` walks all of those by duck typing, so this module (and the core) imports no Ray.
"""

from __future__ import annotations

import errno
import functools
from collections.abc import Callable
from typing import Any, TypeVar


class FFRError(ValueError):
    """A user-facing error: bad config value, unknown registry name, missing or corrupt input."""


F = TypeVar("F", bound=Callable[..., Any])
# Where Ray keeps the exception it wrapped: RayTaskError.cause, Ray Train's per-rank failures, exception groups.
# Not __context__: a bug raised while handling a user error must keep its own traceback.
_LINKS = ("cause", "__cause__")
_COLLECTIONS = ("worker_failures", "exceptions", "errors")


def _neighbours(e: BaseException) -> list[BaseException]:
    out = [getattr(e, name, None) for name in _LINKS]
    for name in _COLLECTIONS:
        many = getattr(e, name, None)
        if isinstance(many, dict):
            many = list(many.values())
        if isinstance(many, (list, tuple)):
            out += list(many)
    out += list(getattr(e, "args", ()) or ())
    return [x for x in out if isinstance(x, BaseException)]


def _is_wrapper(e: BaseException) -> bool:
    # Ray's dual-class RayTaskError(FFRError): an FFRError by type whose message is a remote traceback.
    return any(c.__name__ in ("RayTaskError", "RayActorError") for c in type(e).__mro__)


# Storage that stayed unreachable through every retry is the environment, not a bug: one line, like bad input.
_UNREACHABLE = ("EndpointConnectionError", "ConnectionClosedError", "ConnectTimeoutError", "ReadTimeoutError")


def _unreachable(e: BaseException) -> FFRError | None:
    """A storage outage or a full disk, as one line (a full disk mid-write from code that has no handler)."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return FFRError(f"no space left on the device ({e.filename or e.strerror}); free space or choose another "
                        "output, then rerun the same command to resume")
    if any(c.__name__ in _UNREACHABLE for c in type(e).__mro__):
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return FFRError(f"object storage unreachable after retries ({type(e).__name__}: {first}); check the "
                        "endpoint and network, then rerun the same command to resume")
    return None


def user_error(error: BaseException) -> FFRError | None:
    """The FFRError a (possibly Ray-wrapped) exception carries, as a plain one-line FFRError; None for a bug."""
    seen: set[int] = set()
    todo = [error]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, FFRError) and not _is_wrapper(e):
            message = str(e).strip().splitlines()
            return e if len(message) <= 1 else FFRError(message[-1])
        if _unreachable(e) is not None:
            return _unreachable(e)
        todo += _neighbours(e)
    return None


def unwrap_user_errors(fn: F) -> F:
    """Entry points (generate, train, sweep): an FFRError from inside Ray is re-raised as itself, one line;
    anything else (a bug) propagates unchanged, traceback and all."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FFRError as e:
            if not _is_wrapper(e):
                raise
            raise (user_error(e) or e) from None
        except Exception as e:  # noqa: BLE001 - re-raised unchanged unless it carries a user error
            found = user_error(e)
            if found is None:
                raise
            raise found from None

    return wrapper  # type: ignore[return-value]
