"""The review app against a live server (``ffr review serve`` in a subprocess, reached over loopback the way raters
reach it), tried the way an attacker on the same host, or a proxy set-up, would: forged origins, another
rater's images, a bad form value, file modes, revoked raters, the headers on every response, sessions."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import httpx
import pandas as pd
import pytest
from review_fixtures import Server, build_review_output, free_port
from sqlalchemy import func, select

from ffr.cli import main as ffr_main
from ffr.review.app import ADMIN_COOKIE, RATER_COOKIE
from ffr.review.db import Rater, ReviewImage, Vote
from ffr.review.store import add_rater, open_review

K = 2


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("review-security")
    info = build_review_output(str(tmp / "out"))
    log = tmp / "server.log"
    # a fresh database: serve creates it (and must not print the admin link)
    server = Server(["--data", info["root"], "--votes", str(K), "--task-size", "4", "--references",
                     info["references"], "--definitions", info["definitions"]], log)
    try:
        review, _ = open_review(info["root"])
        yield {**info, "url": server.url, "log": log, "review": review}
    finally:
        server.stop()


def sign_in(live, name: str) -> tuple[httpx.Client, str]:
    """A rater's browser, signed in through their invite link; and the link's token."""
    token = add_rater(live["review"], name)
    client = httpx.Client(base_url=live["url"], timeout=30)
    assert client.get(f"/r/{token}").status_code == 303
    return client, token


def admin(live, capsys) -> httpx.Client:
    assert ffr_main(["review", "admin-link", "--data", live["root"], "--base-url", live["url"]]) == 0
    link = capsys.readouterr().out.strip()
    client = httpx.Client(timeout=30)
    assert client.get(link).status_code == 303
    client.base_url = live["url"]
    return client


def votes_on(live, image_id: str) -> int:
    with live["review"].readers() as s:
        return s.scalar(select(func.count()).select_from(Vote).where(Vote.image_id == image_id))


def log_lines(live) -> list[str]:
    return live["log"].read_text().splitlines()


def test_serve_never_prints_the_admin_link_and_healthz_says_only_that_it_is_up(live, capsys):
    text = live["log"].read_text()
    assert "/admin/" not in text and "ffr review admin-link" in text
    health = httpx.get(f"{live['url']}/healthz")
    assert health.json() == {"ok": True}
    page = admin(live, capsys).get("/admin")  # the link comes on explicit request, and works
    assert page.status_code == 200 and "goldfish/grass" in page.text


def test_a_post_from_another_origin_is_refused_and_records_nothing(live, capsys):
    alice, _ = sign_in(live, "alice")
    task = alice.get("/api/task").json()
    image_id = task["image_ids"][0]
    vote = {"image_id": image_id, "present": "yes", "csrf": task["csrf"]}  # a valid cookie AND a valid CSRF token
    other_port = f"http://127.0.0.1:{free_port()}"  # same site as the app: SameSite=Strict lets the cookie through
    forged = [{"Origin": "http://evil.example"}, {"Origin": other_port}, {"Origin": live["url"] + ".evil.example"},
              {"Origin": "null", "Sec-Fetch-Site": "cross-site"}, {"Origin": "null", "Sec-Fetch-Site": "same-site"},
              {"Origin": "null"}, {"Referer": f"{other_port}/attack.html"}, {"Sec-Fetch-Site": "same-site"}]
    for headers in forged:
        before = log_lines(live)
        answer = alice.post("/vote", data=vote, headers=headers)
        assert answer.status_code == 403, headers
        new = log_lines(live)[len(before):]
        assert len(new) == 1 and "refused POST /vote from another origin" in new[0], (headers, new)
        assert votes_on(live, image_id) == 0
    # the admin export too: nothing is written
    boss = admin(live, capsys)
    csrf = boss.get("/admin").text.split('name="csrf" value="')[1].split('"')[0]
    assert boss.post("/admin/export", data={"csrf": csrf}, headers={"Origin": other_port}).status_code == 403
    assert not Path(live["root"], "review", "accepted.parquet").exists()
    # the app's own origin, however the browser says it: Origin, Referer, Sec-Fetch-Site; and a script (no headers)
    for n, headers in enumerate([{"Origin": live["url"]}, {"Origin": "null", "Sec-Fetch-Site": "same-origin"},
                                 {"Referer": f"{live['url']}/task"}, {}]):
        image_id = task["image_ids"][n]
        answer = alice.post("/vote", data={**vote, "image_id": image_id}, headers=headers)
        assert (answer.status_code, answer.headers["x-ffr-vote"]) == (303, "recorded"), headers
        assert votes_on(live, image_id) == 1


def test_a_bad_min_present_is_a_4xx_with_one_line_not_a_500(live, capsys):
    boss = admin(live, capsys)
    csrf = boss.get("/admin").text.split('name="csrf" value="')[1].split('"')[0]
    before = log_lines(live)
    for value, status, message in [("9", 400, f"min_present=9; expected 1..{K}"), ("0", 400, "min_present=0"),
                                   ("many", 422, "min_present: Input should be a valid integer")]:
        answer = boss.post("/admin/export", data={"csrf": csrf, "min_present": value})
        assert answer.status_code == status and message in answer.json()["detail"], answer.text
        assert "\n" not in answer.json()["detail"]
    assert not any("Traceback" in line or "Exception" in line for line in log_lines(live)[len(before):])
    assert boss.post("/admin/export", data={"csrf": csrf, "min_present": str(K)}).status_code == 303


def test_a_rater_fetches_only_their_own_tasks_images_guides_and_references(live):
    bob, _ = sign_in(live, "bob")
    carol, _ = sign_in(live, "carol")
    mine = set(bob.get("/api/task").json()["image_ids"])
    everything = sorted(image.id for image in _images(live))
    # the ids are predictable: bob tries them all, and gets exactly his own task's
    served = {i for i in everything if bob.get(f"/img/{i}/generated").status_code == 200}
    assert served == mine and len(mine) == 4
    refused = {i: carol.get(f"/img/{i}/{kind}").status_code for i in mine for kind in ("generated", "guide")}
    assert set(refused.values()) == {403}, "carol has no task yet: none of bob's images, nor their guides"
    assert carol.get("/ref/0/0").status_code == 403  # nor reference images of a class she has not been given
    ys = {int(i[1:5]) // 2 for i in mine}  # the fixture's group ids: g = 2 * y + b; class 0 has references
    assert bob.get("/ref/0/0").status_code == (200 if 0 in ys else 403)
    assert all(bob.get(f"/img/{i}/guide").content[:4] == b"\x89PNG" for i in mine)
    assert httpx.get(f"{live['url']}/img/{next(iter(mine))}/generated").status_code == 403  # signed out


def _images(live):
    with live["review"].readers() as s:
        return list(s.scalars(select(ReviewImage)))


def test_the_database_and_its_folder_are_private(live):
    alice, _ = sign_in(live, "alice-files")
    task = alice.get("/api/task").json()
    alice.post("/vote", data={"image_id": task["image_ids"][0], "present": "yes", "csrf": task["csrf"]})
    folder = Path(live["root"], "review", "private")
    assert live["review"].url == f"sqlite:///{folder / 'review.sqlite'}"
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["review.sqlite", "review.sqlite-shm", "review.sqlite-wal"]  # a live server in WAL mode
    modes = {name: stat.S_IMODE((folder / name).stat().st_mode) for name in files}
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and set(modes.values()) == {0o600}, modes
    # the exports' folder stays readable by the readers (training on another account, a Ray worker)
    assert stat.S_IMODE(folder.parent.stat().st_mode) & 0o055 == 0o055


def test_revoke_ends_a_raters_access_and_with_drop_votes_their_votes(live, capsys):
    review = live["review"]
    raters = {name: sign_in(live, name) for name in ("dave", "erin", "frank")}
    tasks = {}
    for name, (client, _) in raters.items():
        task = client.get("/api/task").json()
        tasks[name] = task
        for image_id in task["image_ids"]:
            answer = client.post("/vote", data={"image_id": image_id, "present": "no", "csrf": task["csrf"]})
            assert answer.headers["x-ffr-vote"] == "recorded"
    assert ffr_main(["review", "export", "--data", live["root"]]) == 0
    capsys.readouterr()
    decisions = Path(live["root"], "review", "decisions.parquet")
    before = pd.read_parquet(decisions).set_index("id")

    dave, dave_link = raters["dave"]
    dave_task = dave.get("/api/task").json()
    assert ffr_main(["review", "revoke", "dave", "--data", live["root"]]) == 0
    assert "their 4 vote(s) still count" in capsys.readouterr().out
    assert dave.get("/task").status_code == 403 and dave.get("/api/task").status_code == 403
    assert dave.get(f"/img/{tasks['dave']['image_ids'][0]}/generated").status_code == 403
    vote = {"image_id": dave_task["image_ids"][0] if dave_task["image_ids"] else tasks["dave"]["image_ids"][0],
            "present": "yes", "csrf": dave_task["csrf"]}
    assert dave.post("/vote", data=vote).status_code == 403
    assert httpx.get(f"{live['url']}/r/{dave_link}").status_code == 403  # the invite link is dead too
    with review.readers() as s:
        dave_id = s.scalar(select(Rater.id).where(Rater.name == "dave"))
        assert s.scalar(select(func.count()).select_from(Vote).where(Vote.rater_id == dave_id)) == 4

    erin, erin_link = raters["erin"]
    assert ffr_main(["review", "revoke", "erin", "--drop-votes", "--data", live["root"]]) == 0
    out = capsys.readouterr().out
    assert "4 vote(s) dropped" in out and "export redone" in out
    assert erin.get("/task").status_code == 403
    erins = tasks["erin"]["image_ids"]
    with review.readers() as s:
        erin_id = s.scalar(select(Rater.id).where(Rater.name == "erin"))
        assert s.scalar(select(func.count()).select_from(Vote).where(Vote.rater_id == erin_id)) == 0
        counted = dict(s.execute(select(ReviewImage.id, ReviewImage.n_votes).where(ReviewImage.id.in_(erins))).all())
    after = pd.read_parquet(decisions).set_index("id")
    for image_id in erins:  # her "absent" votes are gone from the counts and from the exported decisions
        assert before.loc[image_id, "decision"] == "reject"  # any "absent" vote rejects when m = K
        assert counted[image_id] == votes_on(live, image_id) == before.loc[image_id, "n_votes"] - 1
        assert after.loc[image_id, "n_votes"] == counted[image_id]
        if counted[image_id] == 0:  # only erin had voted: back to pending, and offered to other raters
            assert after.loc[image_id, "decision"] == "pending"
    assert ffr_main(["review", "progress", "--data", live["root"]]) == 0
    progress = capsys.readouterr().out
    assert "rater dave: 4 votes (revoked)" in progress and "rater erin: 0 votes (revoked)" in progress
    # a new link reinstates her
    assert ffr_main(["review", "invite", "erin", "--reissue", "--data", live["root"], "--base-url", live["url"]]) == 0
    fresh = httpx.Client(timeout=30)
    assert fresh.get(capsys.readouterr().out.strip()).status_code == 303
    fresh.base_url = live["url"]
    assert fresh.get("/api/task").status_code == 200 and httpx.get(f"{live['url']}/r/{erin_link}").status_code == 403


INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I)


def test_security_headers_on_every_response_and_no_inline_script_or_style(live, capsys):
    rater, token = sign_in(live, "grace")
    image_id = rater.get("/api/task").json()["image_ids"][0]
    boss = admin(live, capsys)
    stranger = httpx.Client(base_url=live["url"], timeout=30)
    answers = {"page": rater.get("/task"), "image": rater.get(f"/img/{image_id}/generated"),
               "guide": rater.get(f"/img/{image_id}/guide"), "css": rater.get("/static/review.css"),
               "script": rater.get("/static/task.js"), "admin": boss.get("/admin"), "health": stranger.get("/healthz"),
               "403 page": stranger.get("/task", headers={"accept": "text/html"}), "404": rater.get("/nope"),
               "405": rater.get("/vote"), "422": rater.post("/vote", data={}),
               "refused": rater.post("/vote", data={}, headers={"Origin": "http://evil.example"}),
               "sign-in": stranger.get(f"/r/{token}")}
    for what, answer in answers.items():
        h = answer.headers
        csp = h.get("content-security-policy", "")
        assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp, what
        assert h.get("referrer-policy") == "no-referrer" and h.get("x-content-type-options") == "nosniff", what
        assert h.get("x-frame-options") == "DENY" and h.get("cross-origin-resource-policy") == "same-origin", what
    assert answers["page"].headers["cache-control"] == "no-store"  # it carries a CSRF token
    for what in ("page", "admin", "403 page"):
        html = answers[what].text
        assert not INLINE_SCRIPT.search(html) and "<style" not in html and " style=" not in html, what
    assert '<script src="/static/task.js">' in answers["page"].text


def test_the_cookie_holds_a_session_id_never_the_invite_token(live):
    client, token = sign_in(live, "heidi")
    cookie = client.cookies[RATER_COOKIE]
    assert cookie != token and len(cookie) >= 32
    header = httpx.get(f"{live['url']}/r/{token}").headers["set-cookie"].lower()
    assert "httponly" in header and "samesite=strict" in header and "secure" not in header  # plain http: no Secure
    assert client.get("/api/task").status_code == 200
    replay = httpx.Client(base_url=live["url"], cookies={RATER_COOKIE: token})  # the old cookie format
    assert replay.get("/api/task").status_code == 403
    assert httpx.Client(base_url=live["url"], cookies={ADMIN_COOKIE: cookie}).get("/admin").status_code == 403
