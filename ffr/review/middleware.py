"""What every response carries, and the origin check every state-changing request passes first (plain ASGI:
it runs before routing, so it also covers error pages, 404s and 405s, and a refused POST never reaches a
handler — nothing is recorded).

Headers: a content security policy with no inline script or style at all (the page's CSS and its keyboard
script are files under ``/static/``), no framing, no Referer (the invite and admin URLs carry tokens), no MIME
sniffing, no cross-origin embedding of the images, and ``Cache-Control: no-store`` unless a response says
otherwise (pages carry CSRF tokens; images set their own private caching).
"""

from __future__ import annotations

import logging

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse, PlainTextResponse

from ffr.review.origins import SAFE_METHODS, cross_origin_reason, served_origin

log = logging.getLogger("ffr.review")

CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                           "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-frame-options": "DENY",  # frame-ancestors for browsers that predate it
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}


class SecurityMiddleware:
    """Security headers on every response; a 403 and one log line for a state-changing request of another origin."""

    def __init__(self, app, public_url: str = "") -> None:
        self.app = app
        self.public_url = public_url

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
                if "cache-control" not in headers:
                    headers["cache-control"] = "no-store"
            await send(message)

        if scope["method"] not in SAFE_METHODS:
            headers = Headers(scope=scope)
            served = served_origin(self.public_url, scope.get("scheme", "http"), headers.get("host"),
                                   scope.get("server"))
            reason = cross_origin_reason(headers.get("origin"), headers.get("referer"),
                                         headers.get("sec-fetch-site"), served)
            if reason:
                log.warning("refused %s %s from another origin: %s; this app is served at %s%s", scope["method"],
                            scope.get("path", "")[:200], reason, served,
                            "" if self.public_url else " (behind a proxy? pass --public-url)")
                message = f"request refused: it came from another site ({reason}), not from {served}"
                response = PlainTextResponse(message, 403) if "text/html" in headers.get("accept", "") \
                    else JSONResponse({"detail": message}, 403)
                await response(scope, receive, send_with_headers)
                return
        await self.app(scope, receive, send_with_headers)
