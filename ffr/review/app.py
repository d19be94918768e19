"""The review web app (FastAPI, server-rendered Jinja2 pages; one small static script for keyboard shortcuts).

Raters sign in by opening their invite link (``/r/<token>``); the admin at ``/admin/<token>``. Either link is
exchanged for a session (:mod:`sessions`): the HttpOnly, SameSite=Strict cookie holds a session id, never the
token, and is ``Secure`` when the app is served over https (``--public-url``). Every POST passes the origin
check (:mod:`middleware`) and carries a CSRF token derived from the session. A rater reaches only their own
tasks: the images, guides and reference images of the tasks assigned to them. A vote is a form POST answered
by a redirect (post/redirect/get), so a reload never submits twice. A user error is a 4xx with one line (in
the response, and in the log for the ones a client cannot see coming); never a 500.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Form, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import exists, select
from starlette.exceptions import HTTPException as StarletteHTTPException

from ffr.errors import FFRError
from ffr.review.assignment import open_task, task_progress
from ffr.review.db import Assignment, Rater, ReviewImage
from ffr.review.decisions import check_min_present, export
from ffr.review.images import ImageSource, valid_id
from ffr.review.middleware import SecurityMiddleware
from ffr.review.progress import group_progress, rater_votes
from ffr.review.sessions import (
    ADMIN_SESSION_S,
    RATER_SESSION_S,
    is_admin_session,
    session_rater,
    sign_in_admin,
    sign_in_rater,
)
from ffr.review.store import Review
from ffr.review.tokens import csrf_ok, csrf_token
from ffr.review.voting import Outcome, record_vote

RATER_COOKIE, ADMIN_COOKIE = "ffr_review_rater", "ffr_review_admin"
HERE = Path(__file__).parent
TEMPLATES = Jinja2Templates(directory=str(HERE / "templates"))
STATIC = {name: (HERE / "static" / name).read_bytes() for name in ("review.css", "task.js")}
STATIC_TYPES = {"css": "text/css; charset=utf-8", "js": "text/javascript; charset=utf-8"}
log = logging.getLogger("ffr.review")


@dataclass(frozen=True)
class Rating:
    """A signed-in rater and the session id their cookie holds (the CSRF token is derived from it)."""

    rater: Rater
    session: str


def create_app(review: Review, images: ImageSource) -> FastAPI:
    settings = review.settings
    sessions, readers = review.sessions, review.readers
    secure_cookies = settings.public_url.startswith("https://")
    app = FastAPI(title="ffr review", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(SecurityMiddleware, public_url=settings.public_url)

    def rater_of(request: Request) -> Rating:
        session = request.cookies.get(RATER_COOKIE)
        rater = session_rater(review, session)
        if rater is None:
            raise HTTPException(403, "open your personal invite link first (ask the review admin for one)")
        return Rating(rater, session)

    def admin_session(request: Request) -> str:
        session = request.cookies.get(ADMIN_COOKIE)
        if not is_admin_session(review, session):
            raise HTTPException(403, "admin session missing or expired: open the admin link "
                                     "('ffr review admin-link' makes a new one)")
        return session

    def signed_in_rater(request: Request) -> Rater | None:
        """The signed-in rater; None for the admin; 403 for anyone else."""
        try:
            return rater_of(request).rater
        except HTTPException:
            admin_session(request)
            return None

    def may_see(request: Request, image_id: str | None = None, y: int | None = None) -> None:
        """The admin sees everything; a rater only what belongs to a task assigned to them."""
        rater = signed_in_rater(request)
        if rater is None:
            return
        mine = exists().where(Assignment.rater_id == rater.id)
        mine = mine.where(Assignment.image_id == image_id) if image_id is not None else \
            mine.where(Assignment.image_id == ReviewImage.id, ReviewImage.y == y)
        with readers() as s:
            if not s.scalar(select(mine)):
                raise HTTPException(403, "this image is not in your tasks")

    def sign_in(session: str, cookie: str, max_age: int, target: str) -> RedirectResponse:
        response = RedirectResponse(target, status_code=303)
        # Secure only behind https: plain HTTP on loopback / through an SSH tunnel must keep working
        response.set_cookie(cookie, session, httponly=True, samesite="strict", max_age=max_age, path="/",
                            secure=secure_cookies)
        return response

    @app.get("/healthz")
    def healthz() -> dict:
        return {"ok": True}  # nothing else: it answers anyone who can reach the port

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in STATIC:
            raise HTTPException(404, "no such file")
        return Response(STATIC[name], media_type=STATIC_TYPES[name.rsplit(".", 1)[1]],
                        headers={"Cache-Control": "public, max-age=3600"})

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request) -> Response:
        rater_of(request)
        return RedirectResponse("/task", status_code=303)

    @app.get("/r/{token}")
    def invite(token: str) -> Response:
        session = sign_in_rater(review, token)
        if session is None:
            raise HTTPException(403, "this invite link is not valid (ask the review admin for a new one)")
        return sign_in(session, RATER_COOKIE, RATER_SESSION_S, "/task")

    @app.get("/task", response_class=HTMLResponse)
    def task_page(request: Request) -> Response:
        rating = rater_of(request)
        rater = rating.rater
        with review.write_lock, sessions() as s:
            task, ids = open_task(s, rater.id, settings)
        with readers() as s:
            if not ids:
                return TEMPLATES.TemplateResponse(request, "done.html", {"rater": rater})
            voted, total = task_progress(s, rater.id, task)
        image_id = ids[0]
        row = images.rows[image_id]
        y = int(row["y"])
        context = {"rater": rater, "task": task, "position": voted + 1, "total": total, "image_id": image_id,
                   "row": row, "guide": images.has_guide(image_id), "definition": images.definition(image_id),
                   "references": range(images.reference_count(y)), "y": y, "csrf": csrf_token(rating.session)}
        return TEMPLATES.TemplateResponse(request, "task.html", context)

    @app.get("/api/task")
    def task_json(request: Request) -> dict:
        """The current task for scripted raters and tests: ids still to vote on, and the CSRF token."""
        rating = rater_of(request)
        with review.write_lock, sessions() as s:
            task, ids = open_task(s, rating.rater.id, settings)
        return {"task": task, "image_ids": ids, "csrf": csrf_token(rating.session)}

    @app.post("/vote")
    def vote(request: Request, image_id: str = Form(...), present: str = Form(...), unsafe: str = Form(""),
             csrf: str = Form("")) -> Response:
        rating = rater_of(request)
        if not csrf_ok(rating.session, csrf):
            raise HTTPException(403, "CSRF token missing or wrong; reload the page")
        if not valid_id(image_id):
            raise HTTPException(404, "no such image")
        if present not in ("yes", "no"):
            raise HTTPException(400, f"present={present[:20]!r}; expected 'yes' or 'no'")
        with review.write_lock:
            outcome = record_vote(sessions, rating.rater.id, image_id, present == "yes",
                                  unsafe in ("1", "on", "yes"), settings)
        if outcome is Outcome.NOT_ASSIGNED:
            with readers() as s:
                known = s.get(ReviewImage, image_id) is not None
            raise HTTPException(409 if known else 404, "this image is not in your task" if known else "no such image")
        return RedirectResponse("/task", status_code=303, headers={"X-FFR-Vote": outcome.value})

    def image_response(data: bytes, media: str) -> Response:
        return Response(data, media_type=media, headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/img/{image_id}/{kind}")
    def image(request: Request, image_id: str, kind: str) -> Response:
        if images.row(image_id) is None or kind not in ("generated", "guide"):
            signed_in_rater(request)  # signed out: a 403, before a 404 says whether the id exists
            raise HTTPException(404, "no such image")
        may_see(request, image_id=image_id)
        if kind == "generated":
            return image_response(*images.generated(image_id))
        if not images.has_guide(image_id):
            raise HTTPException(404, "this image was generated without a guide")
        return image_response(images.guide_png(image_id), "image/png")

    @app.get("/ref/{y}/{k}")
    def reference(request: Request, y: int, k: int) -> Response:
        if not (0 <= y < images.spec.n_classes and 0 <= k < images.reference_count(y)):
            signed_in_rater(request)
            raise HTTPException(404, "no such reference image")
        may_see(request, y=y)
        return image_response(*images.reference(y, k))

    @app.get("/admin/{token}")
    def admin_sign_in(token: str) -> Response:
        session = sign_in_admin(review, token)
        if session is None:
            raise HTTPException(403, "admin token missing or wrong")
        return sign_in(session, ADMIN_COOKIE, ADMIN_SESSION_S, "/admin")

    @app.get("/admin", response_class=HTMLResponse)
    def admin(request: Request, exported: str = "") -> Response:
        session = admin_session(request)
        context = {"settings": settings, "progress": group_progress(review).to_dict("records"),
                   "raters": rater_votes(review), "csrf": csrf_token(session), "exported": exported[:20]}
        return TEMPLATES.TemplateResponse(request, "admin.html", context)

    @app.post("/admin/export")
    def admin_export(request: Request, csrf: str = Form(""), min_present: int | None = Form(None)) -> Response:
        session = admin_session(request)
        if not csrf_ok(session, csrf):
            raise HTTPException(403, "CSRF token missing or wrong; reload the page")
        k = settings.votes_per_image
        if min_present is not None and not 1 <= min_present <= k:
            raise HTTPException(400, f"min_present={min_present}; expected 1..{k} (the votes per image)")
        with review.write_lock:
            summary = export(review, check_min_present(min_present, k))
        return RedirectResponse(f"/admin?exported={summary['accepted']}", status_code=303)

    def error_page(request: Request, status: int, message: str) -> Response:
        if "text/html" in request.headers.get("accept", ""):
            return TEMPLATES.TemplateResponse(request, "message.html", {"status": status, "message": message},
                                              status_code=status)
        return JSONResponse({"detail": message}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return error_page(request, exc.status_code, exc.detail)

    @app.exception_handler(RequestValidationError)
    def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return error_page(request, 422, f"{where}: {first.get('msg', 'invalid value')}")

    @app.exception_handler(FFRError)
    def user_error(request: Request, exc: FFRError) -> Response:
        # A user mistake that got past the checks above (bad input reaching the core): one line, never a 500.
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        log.warning("%s %s: %s", request.method, _loggable(request), message)
        return error_page(request, 400, message)

    return app


def _loggable(request: Request) -> str:
    """The request path, without the token of an invite or admin link."""
    route = request.scope.get("route")
    if route is not None and "{token}" in getattr(route, "path", ""):
        return route.path
    return request.url.path[:200]
