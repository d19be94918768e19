"""The review web app (FastAPI, server-rendered Jinja2 pages; a few lines of JS only for keyboard shortcuts).

Raters sign in by opening their invite link (``/r/<token>``), which sets an HttpOnly, SameSite=Strict cookie;
the admin signs in the same way at ``/admin/<token>``. Every POST carries a CSRF token bound to that session.
A vote is a form POST answered by a redirect (post/redirect/get), so a reload never submits twice.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import select
from starlette.exceptions import HTTPException as StarletteHTTPException

from ffr.review.assignment import open_task, task_progress
from ffr.review.db import Meta, Rater, ReviewImage
from ffr.review.decisions import export
from ffr.review.images import ImageSource, valid_id
from ffr.review.progress import group_progress, rater_votes
from ffr.review.store import Review
from ffr.review.tokens import csrf_ok, csrf_token, token_hash
from ffr.review.voting import Outcome, record_vote

RATER_COOKIE, ADMIN_COOKIE = "ffr_review_rater", "ffr_review_admin"
TEMPLATES = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))


def create_app(review: Review, images: ImageSource) -> FastAPI:
    settings = review.settings
    sessions, readers = review.sessions, review.readers
    app = FastAPI(title="ffr review", docs_url=None, redoc_url=None, openapi_url=None)

    def rater_of(request: Request) -> Rater:
        token = request.cookies.get(RATER_COOKIE)
        if token:
            with readers() as s:
                rater = s.scalar(select(Rater).where(Rater.token_hash == token_hash(token)))
            if rater is not None:
                return rater
        raise HTTPException(403, "open your personal invite link first (ask the review admin for one)")

    def admin_hash(request: Request) -> str:
        token = request.cookies.get(ADMIN_COOKIE)
        if token:
            with readers() as s:
                stored = s.get(Meta, "admin_token_hash").value
            if token_hash(token) == stored:
                return stored
        raise HTTPException(403, "admin token missing or wrong")

    def signed_in(request: Request) -> None:
        try:
            rater_of(request)
        except HTTPException:
            admin_hash(request)

    def sign_in(token: str, cookie: str, target: str) -> RedirectResponse:
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(cookie, token, httponly=True, samesite="strict", max_age=90 * 24 * 3600,
                            secure=False)  # plain HTTP on loopback / through an SSH tunnel
        return response

    @app.get("/healthz")
    def healthz() -> dict:
        return {"ok": True, "data": settings.data_uri}

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request) -> Response:
        rater_of(request)
        return RedirectResponse("/task", status_code=303)

    @app.get("/r/{token}")
    def invite(token: str) -> Response:
        with readers() as s:
            if s.scalar(select(Rater.id).where(Rater.token_hash == token_hash(token))) is None:
                raise HTTPException(403, "this invite link is not valid (ask the review admin for a new one)")
        return sign_in(token, RATER_COOKIE, "/task")

    @app.get("/task", response_class=HTMLResponse)
    def task_page(request: Request) -> Response:
        rater = rater_of(request)
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
                   "references": range(images.reference_count(y)), "y": y,
                   "csrf": csrf_token(settings.secret, rater.token_hash)}
        return TEMPLATES.TemplateResponse(request, "task.html", context)

    @app.get("/api/task")
    def task_json(request: Request) -> dict:
        """The current task for scripted raters and tests: ids still to vote on, and the CSRF token."""
        rater = rater_of(request)
        with review.write_lock, sessions() as s:
            task, ids = open_task(s, rater.id, settings)
        return {"task": task, "image_ids": ids, "csrf": csrf_token(settings.secret, rater.token_hash)}

    @app.post("/vote")
    def vote(request: Request, image_id: str = Form(...), present: str = Form(...), unsafe: str = Form(""),
             csrf: str = Form("")) -> Response:
        rater = rater_of(request)
        if not csrf_ok(settings.secret, rater.token_hash, csrf):
            raise HTTPException(403, "CSRF token missing or wrong; reload the page")
        if not valid_id(image_id):
            raise HTTPException(404, "no such image")
        if present not in ("yes", "no"):
            raise HTTPException(400, f"present={present!r}; expected 'yes' or 'no'")
        with review.write_lock:
            outcome = record_vote(sessions, rater.id, image_id, present == "yes", unsafe in ("1", "on", "yes"),
                                  settings)
        if outcome is Outcome.NOT_ASSIGNED:
            with readers() as s:
                known = s.get(ReviewImage, image_id) is not None
            raise HTTPException(409 if known else 404, "this image is not in your task" if known else "no such image")
        return RedirectResponse("/task", status_code=303, headers={"X-FFR-Vote": outcome.value})

    def image_response(data: bytes, media: str) -> Response:
        return Response(data, media_type=media, headers={"Cache-Control": "private, max-age=3600",
                                                         "X-Content-Type-Options": "nosniff"})

    @app.get("/img/{image_id}/{kind}")
    def image(request: Request, image_id: str, kind: str) -> Response:
        signed_in(request)
        if images.row(image_id) is None or kind not in ("generated", "guide"):
            raise HTTPException(404, "no such image")
        if kind == "generated":
            return image_response(*images.generated(image_id))
        if not images.has_guide(image_id):
            raise HTTPException(404, "this image was generated without a guide")
        return image_response(images.guide_png(image_id), "image/png")

    @app.get("/ref/{y}/{k}")
    def reference(request: Request, y: int, k: int) -> Response:
        signed_in(request)
        if not (0 <= y < images.spec.n_classes and 0 <= k < images.reference_count(y)):
            raise HTTPException(404, "no such reference image")
        return image_response(*images.reference(y, k))

    @app.get("/admin/{token}")
    def admin_sign_in(token: str) -> Response:
        with readers() as s:
            if token_hash(token) != s.get(Meta, "admin_token_hash").value:
                raise HTTPException(403, "admin token missing or wrong")
        return sign_in(token, ADMIN_COOKIE, "/admin")

    @app.get("/admin", response_class=HTMLResponse)
    def admin(request: Request, exported: str = "") -> Response:
        stored = admin_hash(request)
        context = {"settings": settings, "progress": group_progress(review).to_dict("records"),
                   "raters": rater_votes(review), "csrf": csrf_token(settings.secret, stored), "exported": exported}
        return TEMPLATES.TemplateResponse(request, "admin.html", context)

    @app.post("/admin/export")
    def admin_export(request: Request, csrf: str = Form(""), min_present: int | None = Form(None)) -> Response:
        stored = admin_hash(request)
        if not csrf_ok(settings.secret, stored, csrf):
            raise HTTPException(403, "CSRF token missing or wrong; reload the page")
        with review.write_lock:
            summary = export(review, min_present)
        return RedirectResponse(f"/admin?exported={summary['accepted']}", status_code=303)

    @app.exception_handler(StarletteHTTPException)
    def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if "text/html" in request.headers.get("accept", ""):
            return TEMPLATES.TemplateResponse(request, "message.html", {"status": exc.status_code,
                                                                        "message": exc.detail},
                                              status_code=exc.status_code)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    return app
