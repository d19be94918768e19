"""Secrets: invite and admin tokens (only their SHA-256 is stored) and CSRF tokens (HMAC of the session)."""

from __future__ import annotations

import hashlib
import hmac
import secrets


def new_token() -> str:
    return secrets.token_urlsafe(24)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_token(secret: str, session_hash: str) -> str:
    """Bound to the signed-in rater or admin: a token from another session (or none) does not pass."""
    return hmac.new(secret.encode(), f"csrf:{session_hash}".encode(), hashlib.sha256).hexdigest()


def csrf_ok(secret: str, session_hash: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(csrf_token(secret, session_hash), str(given))
