"""A real browser (Debian's chromium through Playwright) rates images in the review app: an invite link, a
task rated with the mouse, another with the keyboard, reloads mid-task; then the database holds K votes per
image with no duplicate, and the veto rule and export run. Under the app's content security policy (no inline
script or style) nothing is blocked, the browser's own form posts pass the origin check, and a page on another
port of the same host — same-site, so the SameSite=Strict cookie goes along — cannot vote, even holding a valid
CSRF token. Takes the screenshot of docs/review.md (written there with FFR_UPDATE_SCREENSHOTS=1).

Chromium comes from the project's set-up (``make`` installs Debian's ``chromium`` when it can); without it
this test is skipped with the reason. Nothing is downloaded at run time.
"""

from __future__ import annotations

import http.server
import os
import shutil
import threading
from pathlib import Path

import pytest
from review_fixtures import Server, build_review_output, free_port
from sqlalchemy import func, select

from ffr.cli import main as ffr_main
from ffr.datasets.reviewed import accepted_ids
from ffr.review.db import Rater, Vote
from ffr.review.store import add_rater, open_review

CHROMIUM = os.environ.get("FFR_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH: run 'make test' as root (it "
                                 "apt-installs Debian's chromium) or 'apt-get install -y chromium'")]
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "review.png"
K = 2


def _rate(page, use_keyboard: bool, answer, reload_after: int) -> list[str]:
    """Rate until the app says nothing is left; reload once mid-task. Returns the ids rated, in order."""
    rated = []
    while not page.locator("#done").count():
        image_id = page.locator("input[name=image_id]").input_value()
        if len(rated) == reload_after:
            position = page.locator("#position").inner_text()
            page.reload()
            assert page.locator("input[name=image_id]").input_value() == image_id  # same task, same image
            assert page.locator("#position").inner_text() == position
        present, unsafe = answer(image_id)
        with page.expect_navigation():
            if use_keyboard:
                if unsafe:
                    page.keyboard.press("u")
                page.keyboard.press("y" if present else "n")
            else:
                if unsafe:
                    page.locator("#unsafe").click()
                page.locator("#yes" if present else "#no").click()
        rated.append(image_id)
    return rated


def _attacker_site(review_url: str, image_id: str, csrf: str) -> http.server.ThreadingHTTPServer:
    """A page on another port of 127.0.0.1 with a form that votes in the review app (a leaked CSRF token in it)."""
    page = (f'<form method="post" action="{review_url}/vote"><input name="image_id" value="{image_id}">'
            f'<input name="present" value="no"><input name="csrf" value="{csrf}">'
            '<button id="go" type="submit">win a prize</button></form>').encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args) -> None:
            pass

    site = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    return site


def test_raters_in_a_real_browser(tmp_path):
    from playwright.sync_api import sync_playwright

    info = build_review_output(str(tmp_path / "out"), per_group=3, shard_size=6)
    review, _ = open_review(info["root"], create=True, votes_per_image=K, task_size=6)
    links = {name: add_rater(review, name) for name in ("alice", "bob")}
    server = Server(["--data", info["root"], "--references", info["references"], "--definitions",
                     info["definitions"]], tmp_path / "server.log")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            try:
                alice = browser.new_context(viewport={"width": 1000, "height": 860}).new_page()
                blocked = []  # content security policy violations, as the browser reports them
                alice.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
                sent = []  # what the browser's own vote posts say about their origin
                alice.on("request", lambda r: sent.append((r.header_value("origin"), r.header_value("sec-fetch-site")))
                         if r.method == "POST" else None)
                alice.goto(f"{server.url}/r/{links['alice']}")
                assert alice.locator("#class-name").inner_text() in ("goldfish", "tabby cat")
                assert alice.locator("#guide").is_visible() and alice.locator(".refs img").count() in (0, 4)
                # a page that shows everything a rater sees: goldfish (definition column + reference images)
                while alice.locator("#class-name").inner_text() != "goldfish":
                    with alice.expect_navigation():
                        alice.locator("#yes").click()
                alice.wait_for_load_state("networkidle")
                shot = alice.screenshot(path=str(tmp_path / "review.png"), full_page=True)
                assert shot[:4] == b"\x89PNG"
                # docs/review.png is committed: refreshed on request (or when missing), so a test run leaves
                # the checkout clean
                if os.environ.get("FFR_UPDATE_SCREENSHOTS") or not SCREENSHOT.exists():
                    SCREENSHOT.parent.mkdir(exist_ok=True)
                    SCREENSHOT.write_bytes(shot)
                # another port of the same host: same-site, so the cookie goes along; the origin check refuses it
                image_id = alice.locator("input[name=image_id]").input_value()
                own_before = len(sent)
                site = _attacker_site(server.url, image_id, alice.locator("input[name=csrf]").input_value())
                try:
                    alice.goto(f"http://127.0.0.1:{site.server_address[1]}/")
                    with alice.expect_response(f"{server.url}/vote") as refused:
                        alice.locator("#go").click()
                    assert refused.value.status == 403
                finally:
                    site.shutdown()
                assert "refused POST /vote from another origin" in server.log.read_text()
                attack = sent.pop(own_before)
                assert attack[1] == "same-site"  # not cross-site: SameSite=Strict alone would have let it through
                with review.sessions() as s:
                    assert s.scalar(select(func.count()).select_from(Vote)) == len(sent)  # nothing recorded
                alice.goto(f"{server.url}/task")
                _rate(alice, False, lambda i: (True, i == "g0001-000002"), reload_after=3)
                bob = browser.new_context().new_page()
                bob.goto(f"{server.url}/r/{links['bob']}")
                assert len(_rate(bob, True, lambda i: (not i.startswith("g0003"), False), reload_after=4)) == 11
                # a wrong link is refused in the browser too
                stranger = browser.new_context().new_page()
                assert stranger.goto(f"{server.url}/r/wrong-token").status == 403
                assert not blocked, blocked
                # with Referrer-Policy: no-referrer chromium sends "Origin: null" on a form post; Sec-Fetch-Site
                # says same-origin, and that passes
                assert set(sent) <= {(server.url, "same-origin"), ("null", "same-origin")}, set(sent)
            finally:
                browser.close()
    finally:
        server.stop()
    with review.sessions() as s:
        per_image = dict(s.execute(select(Vote.image_id, func.count()).group_by(Vote.image_id)).all())
        pairs = s.execute(select(Vote.image_id, Rater.name).join(Rater, Rater.id == Vote.rater_id)).all()
    assert len(per_image) == info["n_accepted"] == 11 and set(per_image.values()) == {K}
    assert len(pairs) == len(set(pairs)) == 11 * K  # K distinct raters per image, no duplicate
    assert ffr_main(["review", "export", "--data", info["root"]]) == 0
    kept = accepted_ids(info["root"])
    # bob said "absent" for the 3 images of group 3; alice flagged one image as unsafe
    assert kept == set(per_image) - {"g0003-000000", "g0003-000001", "g0003-000002", "g0001-000002"}
