"""Find and scrub configured secrets (S3 keys, MLflow and Ray tokens) in text bound for logs, configs or params.

"Configured" means present in the environment under a secret-looking name, which is where credentials live on
a laptop or in CI (on the cluster they come from the instance role and are never in the environment at all).
Secrets in URLs (``https://user:password@host``) are caught by shape, whatever the variable name.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

# A name holds a credential when it contains one of these (after camelCase → snake_case)...
SECRET_PARTS = ("secret", "password", "passwd", "credential", "access_key", "session_key", "api_key", "apikey",
                "private_key")
# ...or has one of these as a whole word, so "tokenizer" and "max_tokens" stay visible.
SECRET_WORDS = frozenset({"token", "auth"})
# Values shorter than this are too likely to occur by accident ("1", "true") to scrub by value.
MIN_SECRET_LENGTH = 8
REDACTED = "<redacted>"
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/\s@:]*:[^/\s@]*)@")


def is_secret_name(name: object) -> bool:
    """True for environment variable / config key names that hold credentials (AWS_SECRET_ACCESS_KEY, apiToken)."""
    snake = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(name)).lower().replace("-", "_").replace(".", "_")
    return any(part in snake for part in SECRET_PARTS) or any(w in SECRET_WORDS for w in snake.split("_"))


def configured_secrets(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """{variable name: value} for every secret-looking variable in ``environ`` (default: os.environ)."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in environ.items() if is_secret_name(k) and len(v or "") >= MIN_SECRET_LENGTH}


def has_url_credentials(text: str) -> bool:
    """True if ``text`` holds a URL with ``user:password@`` in it."""
    return bool(_URL_USERINFO.search(text))


def scrub(text: str, secrets: Mapping[str, str] | None = None) -> str:
    """``text`` with every configured secret value and every URL password replaced by ``<redacted>``."""
    secrets = configured_secrets() if secrets is None else secrets
    # Longest first, so a secret that contains another is replaced whole.
    for value in sorted(set(secrets.values()), key=len, reverse=True):
        if len(value) >= MIN_SECRET_LENGTH:
            text = text.replace(value, REDACTED)
    return _URL_USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)


def leaked_secrets(text: str, secrets: Mapping[str, str] | None = None) -> list[str]:
    """Names of the configured secrets whose value occurs in ``text`` (plus 'url-credentials' for user:pw@)."""
    secrets = configured_secrets() if secrets is None else secrets
    found = sorted(name for name, value in secrets.items() if len(value) >= MIN_SECRET_LENGTH and value in text)
    if has_url_credentials(text):
        found.append("url-credentials")
    return found
