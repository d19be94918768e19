"""Secrets: invite, admin and session tokens (only their SHA-256 is stored) and CSRF tokens.

A CSRF token is derived from the browser's session id (an HMAC keyed with it), so no CSRF key is stored
anywhere: the server recomputes it from the HttpOnly cookie on each POST, and a page of another origin, which can
read neither the cookie nor our pages, cannot compute it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

CSRF_CONTEXT = b"ffr-review csrf v1"


def new_token() -> str:
    return secrets.token_urlsafe(24)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_token(session_token: str) -> str:
    """Bound to one signed-in session: a token from another session (or none) does not pass."""
    return hmac.new(session_token.encode(), CSRF_CONTEXT, hashlib.sha256).hexdigest()


def csrf_ok(session_token: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(csrf_token(session_token), str(given))
