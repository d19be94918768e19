"""The review app over HTTP: tokens, CSRF, id validation, idempotent votes — and 20 raters voting at once
against a real uvicorn server (``ffr review serve`` in a subprocess) with nothing lost or duplicated."""

from __future__ import annotations

import asyncio
import os
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from review_fixtures import Server, build_review_output
from sqlalchemy import func, select

from ffr.errors import FFRError
from ffr.review.app import ADMIN_COOKIE, RATER_COOKIE, create_app
from ffr.review.db import ReviewImage, Vote
from ffr.review.images import ImageSource
from ffr.review.selection import add_images, choose
from ffr.review.store import add_rater, open_review


@pytest.fixture()
def app(tmp_path):
    info = build_review_output(str(tmp_path / "out"))
    review, admin = open_review(info["root"], create=True, votes_per_image=2, task_size=4)
    with review.sessions.begin() as s:
        add_images(s, choose(info["root"]))
    client = TestClient(create_app(review, ImageSource(info["root"], info["references"], info["definitions"])),
                        follow_redirects=False)
    return {"client": client, "review": review, "admin": admin, "token": add_rater(review, "alice"), **info}


def signed_in(app) -> TestClient:
    c = app["client"]
    assert c.get(f"/r/{app['token']}").status_code == 303
    return c


def test_wrong_tokens_get_403(app):
    c = app["client"]
    assert c.get("/r/not-a-token").status_code == 403
    assert c.get("/admin/not-a-token").status_code == 403
    assert c.get("/admin/" + app["token"]).status_code == 403  # a rater token is not an admin token
    assert c.get("/task").status_code == 403  # no cookie
    c.cookies.set(RATER_COOKIE, "forged")
    assert c.get("/task").status_code == 403
    assert c.get("/img/g0000-000000/generated").status_code == 403
    c.cookies.set(ADMIN_COOKIE, "forged")
    assert c.get("/admin").status_code == 403
    assert "invite link" in c.get("/task", headers={"accept": "text/html"}).text


@pytest.mark.parametrize("path", ["/img/..%2F..%2F..%2Fetc%2Fpasswd/generated", "/img/../../etc/passwd/generated",
                                  "/img/g0000-000000.png/generated", "/img/%2e%2e/generated",
                                  "/img/g0000-000000/..%2F..%2Fgroups.json", "/img/g9999-000000/generated",
                                  "/img/g0000-000005/generated",  # rejected by generation: not in the shards
                                  "/ref/0/4", "/ref/7/0", "/ref/..%2F/0"])
def test_path_traversal_and_unknown_ids_get_404(app, path):
    c = signed_in(app)
    assert c.get(path).status_code in (404, 422), path
    assert c.get(path).status_code != 200


def test_images_guides_and_references_are_served(app):
    c = signed_in(app)
    page = c.get("/task")
    assert page.status_code == 200 and "Is the object of the guide image" in page.text
    ids = c.get("/api/task").json()["image_ids"]
    image = c.get(f"/img/{ids[0]}/generated")
    assert image.status_code == 200 and image.headers["content-type"] == "image/png" and image.content[:4] == b"\x89PNG"
    assert c.get(f"/img/{ids[0]}/guide").content[:4] == b"\x89PNG"
    assert 0 in {int(i[1:5]) // 2 for i in ids}  # a goldfish in her task (group g = 2 * y + b): its references
    assert c.get("/ref/0/3").status_code == 200 and c.get("/ref/1/0").status_code == 404  # class 1 has none


def test_posts_without_the_csrf_token_are_refused(app):
    c = signed_in(app)
    task = c.get("/api/task").json()
    image_id = task["image_ids"][0]
    assert c.post("/vote", data={"image_id": image_id, "present": "yes"}).status_code == 403
    assert c.post("/vote", data={"image_id": image_id, "present": "yes", "csrf": "0" * 64}).status_code == 403
    admin = TestClient(c.app, follow_redirects=False)
    assert admin.get(f"/admin/{app['admin']}").status_code == 303
    assert admin.post("/admin/export", data={}).status_code == 403
    with app["review"].sessions() as s:
        assert s.scalar(select(func.count()).select_from(Vote)) == 0
    # with the token: recorded once; a double submit and a reload change nothing
    vote = {"image_id": image_id, "present": "yes", "csrf": task["csrf"]}
    first, second = c.post("/vote", data=vote), c.post("/vote", data=vote)
    assert (first.status_code, first.headers["x-ffr-vote"]) == (303, "recorded")
    assert (second.status_code, second.headers["x-ffr-vote"]) == (303, "duplicate")
    assert c.post("/vote", data={**vote, "image_id": "g0000-999999"}).status_code == 404
    assert c.post("/vote", data={**vote, "image_id": "../groups"}).status_code == 404
    with app["review"].sessions() as s:
        assert s.scalar(select(func.count()).select_from(Vote)) == 1
    page = admin.get("/admin")
    assert page.status_code == 200 and "goldfish/grass" in page.text
    csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
    assert admin.post("/admin/export", data={"csrf": csrf}).status_code == 303


RATERS, VOTES_EACH, K = 20, 200, 5


@pytest.mark.slow
def test_twenty_raters_posting_200_votes_each_at_once_lose_and_duplicate_nothing(tmp_path, capsys):
    images = RATERS * VOTES_EACH // K  # 800 images × 5 votes = exactly the 4000 votes cast
    info = build_review_output(str(tmp_path / "out"), per_group=images // 4 + 1, shard_size=400)
    review, _ = open_review(info["root"], create=True, votes_per_image=K, task_size=VOTES_EACH)
    with review.sessions.begin() as s:
        add_images(s, choose(info["root"]).head(images))
    tokens = [add_rater(review, f"rater-{i:02d}") for i in range(RATERS)]
    server = Server(["--data", info["root"]], tmp_path / "server.log")
    try:
        cpu_before = server.cpu_seconds()
        recorded, duplicates, elapsed = asyncio.run(_swarm(server.url, tokens))
        cpu = server.cpu_seconds() - cpu_before
    finally:
        server.stop()
    with review.sessions() as s:
        n_votes = s.scalar(select(func.count()).select_from(Vote))
        distinct = s.scalar(select(func.count()).select_from(select(Vote.image_id, Vote.rater_id).distinct()
                                                             .subquery()))
        per_image = set(s.scalars(select(func.count()).select_from(Vote).group_by(Vote.image_id)))
        counters = set(s.scalars(select(ReviewImage.n_votes)))
    assert recorded == n_votes == distinct == RATERS * VOTES_EACH, "a vote was lost or duplicated"
    assert per_image == counters == {K}
    assert duplicates == RATERS * VOTES_EACH // 10  # every double submit answered as a duplicate
    with capsys.disabled():
        print(f"\n[review concurrency] {RATERS} raters × {VOTES_EACH} votes (+10% double submits) in {elapsed:.2f} s "
              f"= {n_votes / elapsed:.0f} votes/s wall; server CPU {cpu:.1f} s = "
              f"{n_votes / max(cpu, 1e-9):.0f} votes per server CPU-second; lost 0, duplicated 0 "
              f"(SQLite, 1 uvicorn worker, load avg {os.getloadavg()[0]:.0f})")


async def _swarm(url: str, tokens: list[str]) -> tuple[int, int, float]:
    limits = httpx.Limits(max_connections=8)
    clients = [httpx.AsyncClient(base_url=url, limits=limits, timeout=120) for _ in tokens]
    try:
        signed = await asyncio.gather(*(c.get(f"/r/{token}") for c, token in zip(clients, tokens)))
        assert {r.status_code for r in signed} == {303} and all(RATER_COOKIE in c.cookies for c in clients)
        tasks = await asyncio.gather(*(c.get("/api/task") for c in clients))
        tasks = [t.json() for t in tasks]
        assert all(len(t["image_ids"]) == VOTES_EACH for t in tasks)
        posts = []
        for client, task in zip(clients, tasks):
            for n, image_id in enumerate(task["image_ids"]):
                form = {"image_id": image_id, "present": "yes" if n % 7 else "no", "csrf": task["csrf"]}
                posts.append(client.post("/vote", data=form))
                if n % 10 == 0:  # a double click
                    posts.append(client.post("/vote", data=form))
        start = time.perf_counter()
        answers = await asyncio.gather(*posts)
        elapsed = time.perf_counter() - start
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    assert {a.status_code for a in answers} == {303}, {a.status_code for a in answers}
    kinds = [a.headers["x-ffr-vote"] for a in answers]
    return kinds.count("recorded"), kinds.count("duplicate"), elapsed


def test_behind_a_tls_proxy_cookies_are_secure_and_posts_must_come_from_the_public_origin(app):
    review, _ = open_review(app["root"], public_url="https://Review.Example.org:443/")
    assert review.settings.public_url == "https://review.example.org"  # stored, normalized
    client = TestClient(create_app(review, ImageSource(app["root"])), base_url="https://review.example.org",
                        follow_redirects=False)
    signed = client.get(f"/r/{app['token']}")
    cookie = signed.headers["set-cookie"].lower()
    assert "secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    task = client.get("/api/task").json()
    vote = {"image_id": task["image_ids"][0], "present": "yes", "csrf": task["csrf"]}
    # the origin an SSH tunnel would have is not the public one; the Host header does not matter behind a proxy
    tunnel = client.post("/vote", data=vote, headers={"Origin": "http://127.0.0.1:8765", "Host": "127.0.0.1:8765"})
    assert tunnel.status_code == 403
    ok = client.post("/vote", data=vote, headers={"Origin": "https://review.example.org", "Host": "127.0.0.1:8765"})
    assert ok.headers["x-ffr-vote"] == "recorded"
    with pytest.raises(FFRError, match="a path prefix is not supported"):
        open_review(app["root"], public_url="https://example.org/review")


def test_a_user_error_inside_any_request_is_a_400_with_one_line(app, monkeypatch, caplog):
    import ffr.review.app as review_app

    def broken(*args, **kwargs):
        raise FFRError("shard 3 of 's3://bucket/out' is missing\nsecond line")

    monkeypatch.setattr(review_app, "export", broken)
    admin = TestClient(app["client"].app, follow_redirects=False)
    assert admin.get(f"/admin/{app['admin']}").status_code == 303
    csrf = admin.get("/admin").text.split('name="csrf" value="')[1].split('"')[0]
    with caplog.at_level("WARNING", logger="ffr.review"):
        answer = admin.post("/admin/export", data={"csrf": csrf})
    assert answer.status_code == 400 and answer.json() == {"detail": "shard 3 of 's3://bucket/out' is missing"}
    assert [r.getMessage() for r in caplog.records] == ["POST /admin/export: shard 3 of 's3://bucket/out' is missing"]


def test_guides_are_built_once_per_image_and_a_few_at_a_time(app, monkeypatch):
    import threading

    from ffr.review.images import BuiltCache

    source = ImageSource(app["root"])
    ids = [i for i in source.rows if source.has_guide(i)][:3]
    threads = [threading.Thread(target=source.guide_png, args=(ids[n % 3],)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert source.guides.builds == 3 and source.guide_png(ids[0])[:4] == b"\x89PNG" and source.guides.builds == 3
    running, peak, lock = [0], [0], threading.Lock()

    def slow(key: str) -> bytes:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        threading.Event().wait(0.02)
        with lock:
            running[0] -= 1
        return key.encode() * 100

    cache = BuiltCache(slow, max_bytes=1000, parallel=2)
    threads = [threading.Thread(target=cache.get, args=(f"k{n:02d}",)) for n in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 2 and cache.builds == 10 and cache._size <= 1000 and len(cache._items) == 3
