"""``ffr review init|serve|invite|export|progress|admin-link``: human review of a generation output.

Examples::

    ffr review init --data s3://bucket/d3s --select candidates --predictions eval/predictions.parquet
    ffr review serve --data s3://bucket/d3s --references imagenet_refs/ --port 8765   # binds 127.0.0.1
    ffr review invite alice                     --data s3://bucket/d3s   # prints alice's personal link
    ffr review export --data s3://bucket/d3s    # → s3://bucket/d3s/review/accepted.parquet (+ topup.json)
"""

from __future__ import annotations

import argparse
import json

from ffr.errors import FFRError

DEFAULT_PORT = 8765


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="generation output under review (local path or s3://)")
    p.add_argument("--db", default=None, help="SQLAlchemy URL (default: SQLite in <data>/review/ for local data, "
                                              "./ffr-review.sqlite for s3://)")


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
    p.add_argument("--base-url", default=f"http://127.0.0.1:{DEFAULT_PORT}", help="where raters reach the app")
    p.add_argument("--reissue", action="store_true", help="replace an existing rater's link")
    p = sub.add_parser("export", help="apply the veto rule; write review/accepted.parquet and review/topup.json")
    _common(p)
    p.add_argument("--min-present", type=int, default=None,
                   help="accept when at least m of K votes say the object is present (default m = K)")
    p = sub.add_parser("progress", help="votes and accepted images per group")
    _common(p)
    p = sub.add_parser("admin-link", help="replace the admin token and print the admin link")
    _common(p)
    p.add_argument("--base-url", default=f"http://127.0.0.1:{DEFAULT_PORT}")


def _init(args: argparse.Namespace):
    from sqlalchemy import func, select

    from ffr.review.db import ReviewImage
    from ffr.review.selection import add_images, choose
    from ffr.review.store import open_review

    lease = args.lease_minutes * 60 if args.lease_minutes is not None else None
    review, admin_token = open_review(args.data, args.db, create=True, votes_per_image=args.votes,
                                      task_size=args.task_size, lease_seconds=lease)
    with review.readers() as s:
        empty = not s.scalar(select(func.count()).select_from(ReviewImage))
    added = 0
    if args.select or empty:
        rows = choose(args.data, args.select or "all", args.per_group, args.predictions, args.seed)
        with review.sessions.begin() as s:
            added = add_images(s, rows)
    print(f"review database {review.url}: {added} image(s) added to review "
          f"(K={review.settings.votes_per_image} votes, N={review.settings.task_size} per task)")
    if admin_token:
        base = f"http://{getattr(args, 'host', '127.0.0.1')}:{getattr(args, 'port', DEFAULT_PORT)}"
        print(f"admin link (shown once; 'ffr review admin-link' makes a new one): {base}/admin/{admin_token}")
    return review


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
        print(f"{args.base_url.rstrip('/')}/r/{token}")
    elif action == "admin-link":
        from ffr.review.store import rotate_admin_token

        print(f"{args.base_url.rstrip('/')}/admin/{rotate_admin_token(review)}")
    elif action == "export":
        from ffr.review.decisions import export

        print(json.dumps(export(review, args.min_present), indent=2))
    elif action == "progress":
        from ffr.review.progress import group_progress, rater_votes

        print(group_progress(review).to_string(index=False))
        for name, n in rater_votes(review):
            print(f"rater {name}: {n} votes")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from ffr.review.app import create_app
    from ffr.review.images import ImageSource

    if not 0 < args.port < 65536:
        raise FFRError(f"--port {args.port}; expected 1..65535")
    review = _init(args)
    images = ImageSource(args.data, args.references, args.definitions)
    print(f"serving {args.data} at http://{args.host}:{args.port}/ (Ctrl-C stops)", flush=True)
    uvicorn.run(create_app(review, images), host=args.host, port=args.port, log_level="warning",
                timeout_keep_alive=30)  # raters pause between images; keep their connection
    return 0
