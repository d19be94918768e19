"""``ffr review init|serve|invite|revoke|export|progress|admin-link``: human review of a generation output.

Examples::

    ffr review init --data s3://bucket/d3s --select candidates --predictions eval/predictions.parquet
    ffr review serve --data s3://bucket/d3s --references imagenet_refs/ --port 8765   # binds 127.0.0.1
    ffr review serve --data s3://bucket/d3s --public-url https://review.example.org   # behind a TLS proxy
    ffr review invite alice                     --data s3://bucket/d3s   # prints alice's personal link
    ffr review revoke alice --drop-votes        --data s3://bucket/d3s   # her link dies, her votes go
    ffr review export --data s3://bucket/d3s    # → s3://bucket/d3s/review/accepted.parquet (+ topup.json)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from ffr.errors import FFRError

DEFAULT_PORT = 8765
DEFAULT_BASE = f"http://127.0.0.1:{DEFAULT_PORT}"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="generation output under review (local path or s3://)")
    p.add_argument("--db", default=None, help="SQLAlchemy URL (default: SQLite, private, in <data>/review/private/ "
                                              "for local data, ./ffr-review/ for s3://)")


def _selection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--select", choices=("all", "sample", "candidates"), default=None,
                   help="images to put under review (default on a new review: all)")
    p.add_argument("--per-group", type=int, default=None, help="'sample': images per group")
    p.add_argument("--predictions", default=None, help="'candidates': D3S evaluation predictions.parquet")
    p.add_argument("--seed", type=int, default=0, help="'sample': which images")
    p.add_argument("--votes", type=int, default=None, help="votes per image, K (default 5)")
    p.add_argument("--task-size", type=int, default=None, help="images per task, N (default 25)")
    p.add_argument("--lease-minutes", type=float, default=None,
                   help="an unfinished task's images are offered to others after this long (default 30)")
    p.add_argument("--public-url", default=None,
                   help="where browsers reach the app, e.g. https://review.example.org behind a TLS proxy: POSTs "
                        "must come from that origin, cookies are Secure for https, links use it (stored; '' resets)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.splitlines()[0]
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "\n".join(__doc__.splitlines()[2:])
    sub = parser.add_subparsers(dest="review_command", metavar="ACTION", required=True)
    p = sub.add_parser("init", help="create or migrate the database and choose the images to review")
    _common(p)
    _selection(p)
    p = sub.add_parser("serve", help="run the web app (binds 127.0.0.1; reach it through an SSH tunnel)")
    _common(p)
    _selection(p)
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default loopback only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--references", default=None, help="folder/<class name or index>/*.jpg: up to 4 shown per class")
    p.add_argument("--definitions", default=None, help="JSON {class name or index: definition}")
    p = sub.add_parser("invite", help="add a rater and print their personal link")
    p.add_argument("name")
    _common(p)
    p.add_argument("--base-url", default=None, help=f"where raters reach the app (default: the review's "
                                                    f"--public-url, else {DEFAULT_BASE})")
    p.add_argument("--reissue", action="store_true",
                   help="replace an existing rater's link (signs out their browsers; reinstates a revoked rater)")
    p = sub.add_parser("revoke", help="remove a rater: their link and sessions stop working at once")
    p.add_argument("name")
    _common(p)
    p.add_argument("--drop-votes", action="store_true",
                   help="also delete their votes: the images get other raters' votes instead, and an existing "
                        "export is redone")
    p = sub.add_parser("export", help="apply the veto rule; write review/accepted.parquet and review/topup.json")
    _common(p)
    p.add_argument("--min-present", type=int, default=None,
                   help="accept when at least m of K votes say the object is present (default m = K)")
    p = sub.add_parser("progress", help="votes and accepted images per group")
    _common(p)
    p = sub.add_parser("admin-link", help="replace the admin token and print the admin link (the old one and its "
                                          "sessions stop working)")
    _common(p)
    p.add_argument("--base-url", default=None, help=f"default: the review's --public-url, else {DEFAULT_BASE}")


def _init(args: argparse.Namespace):
    from sqlalchemy import func, select

    from ffr.review.db import ReviewImage
    from ffr.review.selection import add_images, choose
    from ffr.review.store import open_review

    lease = args.lease_minutes * 60 if args.lease_minutes is not None else None
    review, admin_token = open_review(args.data, args.db, create=True, votes_per_image=args.votes,
                                      task_size=args.task_size, lease_seconds=lease, public_url=args.public_url)
    with review.readers() as s:
        empty = not s.scalar(select(func.count()).select_from(ReviewImage))
    added = 0
    if args.select or empty:
        rows = choose(args.data, args.select or "all", args.per_group, args.predictions, args.seed)
        with review.sessions.begin() as s:
            added = add_images(s, rows)
    print(f"review database {review.url}: {added} image(s) added to review "
          f"(K={review.settings.votes_per_image} votes, N={review.settings.task_size} per task)")
    if admin_token and args.review_command == "init":
        print(f"admin link (shown once; 'ffr review admin-link' makes a new one): "
              f"{_base_url(review, None)}/admin/{admin_token}")
    elif admin_token:  # serve: its output usually ends up in a service log that others can read
        print(f"admin link not shown by serve: run 'ffr review admin-link --data {args.data}' to get one")
    return review


def _base_url(review, given: str | None) -> str:
    return (given or review.settings.public_url or DEFAULT_BASE).rstrip("/")


def run(args: argparse.Namespace) -> int:
    from ffr.review.store import open_review

    action = args.review_command
    if action == "init":
        _init(args)
        return 0
    if action == "serve":
        return _serve(args)
    review, _ = open_review(args.data, args.db)
    if action == "invite":
        from ffr.review.store import add_rater, reissue_rater

        token = reissue_rater(review, args.name) if args.reissue else add_rater(review, args.name)
        print(f"{_base_url(review, args.base_url)}/r/{token}")
    elif action == "revoke":
        _revoke(review, args.name, args.drop_votes)
    elif action == "admin-link":
        from ffr.review.store import rotate_admin_token

        print(f"{_base_url(review, args.base_url)}/admin/{rotate_admin_token(review)}")
    elif action == "export":
        from ffr.review.decisions import export

        print(json.dumps(export(review, args.min_present), indent=2))
    elif action == "progress":
        from ffr.review.progress import group_progress, rater_votes

        print(group_progress(review).to_string(index=False))
        for name, n, revoked in rater_votes(review):
            print(f"rater {name}: {n} votes" + (" (revoked)" if revoked else ""))
    return 0


def _revoke(review, name: str, drop_votes: bool) -> None:
    from ffr.review.decisions import export_again
    from ffr.review.store import revoke_rater

    done = revoke_rater(review, name, drop_votes)
    if drop_votes:
        print(f"revoked rater {name}: link and sessions no longer work; {done['votes_dropped']} vote(s) dropped, "
              "their images are offered to other raters")
        redone = export_again(review)
        if redone:
            print(f"export redone without them: {redone['accepted']} accepted ({redone['review_rejected']} rejected, "
                  f"{redone['review_pending']} pending in review) → {redone['path']}")
    else:
        print(f"revoked rater {name}: link and sessions no longer work; their {done['votes']} vote(s) still count "
              "(--drop-votes deletes them)")


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from ffr.review.app import create_app
    from ffr.review.images import ImageSource

    if not 0 < args.port < 65536:
        raise FFRError(f"--port {args.port}; expected 1..65535")
    review = _init(args)
    images = ImageSource(args.data, args.references, args.definitions)
    # Refused requests and user errors: one line each on stderr (uvicorn's access log stays off: invite and
    # admin URLs carry tokens)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s ffr review: %(message)s", "%Y-%m-%d %H:%M:%S"))
    logger = logging.getLogger("ffr.review")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    public = review.settings.public_url
    print(f"serving {args.data} at http://{args.host}:{args.port}/" + (f" for {public}" if public else "")
          + " (Ctrl-C stops)", flush=True)
    # proxy_headers off: X-Forwarded-* from any local process would be believed; --public-url says what the
    # proxy serves instead
    uvicorn.run(create_app(review, images), host=args.host, port=args.port, log_level="warning",
                proxy_headers=False, timeout_keep_alive=30)  # raters pause between images; keep their connection
    return 0
