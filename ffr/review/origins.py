"""The served origin, and whether a state-changing request came from it (the check behind every POST).

SameSite=Strict cookies judge the *site*, not the origin: a page on another port of the same host, or on a
sibling sub-domain, is same-site and its form POSTs carry the review cookies. The origin check closes that:
a POST is accepted only when the browser says it comes from the origin the app is served at —

1. ``Origin`` (every current browser sends it on POST), else
2. the origin of ``Referer``, else
3. ``Sec-Fetch-Site: same-origin`` (a header pages cannot set). It is what decides for our own forms: the app
   sends ``Referrer-Policy: no-referrer``, under which browsers send ``Origin: null`` and no Referer on POSTs.

A request with none of the three is not from a browser (curl, scripts): it carries no ambient cookie a page
could abuse, so it is let through to the session and CSRF checks. ``Origin: null`` with nothing else to go on
is refused.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ffr.errors import FFRError

DEFAULT_PORTS = {"http": 80, "https": 443}
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def normalize_origin(value: str | None) -> str | None:
    """``scheme://host[:port]`` of an http(s) URL or origin, lower-cased, default port left out; None otherwise."""
    if not value:
        return None
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:  # a port out of range or not a number
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname.lower()
    host = f"[{host}]" if ":" in host else host  # IPv6 literal
    return f"{scheme}://{host}" + (f":{port}" if port and port != DEFAULT_PORTS[scheme] else "")


def check_public_url(url: str) -> str:
    """``--public-url`` → the origin browsers use ("" keeps the default: ``http://<Host header>``)."""
    if url == "":
        return ""
    origin = normalize_origin(url)
    parts = urlsplit(url.strip())
    if origin is None or parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc:
        raise FFRError(f"--public-url {url!r}; expected http(s)://host[:port], the address browsers open (the app "
                       "is served at the root of it: a path prefix is not supported)")
    return origin


def served_origin(public_url: str, scheme: str, host_header: str | None, server: tuple | None) -> str | None:
    """The configured public origin, else the one this request was sent to (what the browser's address bar says
    for a direct or SSH-tunnelled connection, whatever local port the tunnel uses)."""
    if public_url:
        return public_url
    host = host_header or (f"{server[0]}:{server[1]}" if server else "")
    return normalize_origin(f"{scheme}://{host}") if host else None


def cross_origin_reason(origin: str | None, referer: str | None, fetch_site: str | None,
                        served: str | None) -> str | None:
    """None when the request comes from ``served``; else why not (for the log line and the 403)."""
    if origin and origin != "null":
        return None if normalize_origin(origin) == served else f"Origin {origin[:200]!r}"
    if referer:
        got = normalize_origin(referer)
        return None if got == served else f"Referer from {(got or referer)[:200]!r}"
    if fetch_site:
        return None if fetch_site == "same-origin" else f"Sec-Fetch-Site {fetch_site[:40]!r}"
    if origin == "null":
        return "Origin 'null' with neither Referer nor Sec-Fetch-Site to go on"
    return None
