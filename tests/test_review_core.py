"""ffr review without a web server: migrations, selection, task assignment, the veto rule, the export and the
readers that honor it (synthetic dataset, a training run's synthetic stage), local and on S3 (moto)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from review_fixtures import build_review_output
from sqlalchemy import func, select

import ffr.datasets
from ffr.datasets.reviewed import accepted_ids
from ffr.errors import FFRError
from ffr.review.assignment import open_task
from ffr.review.db import ReviewImage, Vote
from ffr.review.decisions import ACCEPT, PENDING, REJECT, export, veto_decision
from ffr.review.images import ImageSource
from ffr.review.selection import add_images, choose
from ffr.review.store import add_rater, open_review
from ffr.review.voting import Outcome, record_vote


def start_review(root: str, how: str = "all", votes: int = 3, task_size: int = 5, db: str | None = None, **kwargs):
    review, admin = open_review(root, db, create=True, votes_per_image=votes, task_size=task_size)
    with review.sessions.begin() as s:
        add_images(s, choose(root, how, **kwargs))
    return review


def rate_everything(review, raters: list[str], present=lambda rater, image_id: True,
                    unsafe=lambda rater, image_id: False) -> int:
    """Each rater takes tasks until none is left; returns the number of votes recorded."""
    recorded = 0
    ids = {}
    for name in raters:
        add_rater(review, name)
    with review.sessions() as s:
        from ffr.review.db import Rater

        ids = {r.name: r.id for r in s.scalars(select(Rater))}
    for name in raters:
        while True:
            with review.sessions() as s:
                _, task = open_task(s, ids[name], review.settings)
            if not task:
                break
            for image_id in task:
                outcome = record_vote(review.sessions, ids[name], image_id, present(name, image_id),
                                      unsafe(name, image_id), review.settings)
                recorded += outcome is Outcome.RECORDED
    return recorded


@pytest.fixture()
def output(tmp_path) -> dict:
    return build_review_output(str(tmp_path / "out"))


def test_migrations_create_exactly_the_models_schema(output):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from ffr.review.db import Base
    from ffr.review.migrate import current_revision

    review, admin = open_review(output["root"], create=True)
    assert admin and current_revision(review.engine) == "0002"
    with review.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    again, admin_again = open_review(output["root"])  # idempotent: same settings, no second admin token
    assert admin_again is None and again.settings == review.settings
    other = build_review_output(output["root"] + "-other")["root"]
    with pytest.raises(FFRError, match="reviews .* not"):
        open_review(other, review.url)
    with pytest.raises(FFRError, match="is not a generation output"):
        open_review(output["root"] + "-missing", create=True)


def test_a_database_of_revision_0001_upgrades_keeping_its_raters_and_dropping_the_stored_csrf_key(output):
    from alembic import command
    from sqlalchemy import text

    from ffr.review import migrate
    from ffr.review.db import Meta, default_url, make_engine, make_private
    from ffr.review.sessions import session_rater, sign_in_rater
    from ffr.review.tokens import token_hash

    url = default_url(output["root"])
    make_private(url)
    with make_engine(url).begin() as connection:
        command.upgrade(migrate._config(connection), "0001")
        meta = {"data_uri": output["root"], "votes_per_image": "3", "task_size": "5", "lease_seconds": "60.0",
                "secret": "a-csrf-key-in-clear", "admin_token_hash": token_hash("admin"), "lock": "0"}
        for key, value in meta.items():
            connection.execute(text("INSERT INTO meta VALUES (:k, :v)"), {"k": key, "v": value})
        connection.execute(text("INSERT INTO raters (name, token_hash, created_at) VALUES ('alice', :h, 0)"),
                           {"h": token_hash("alice-link")})
    review, admin = open_review(output["root"])
    assert admin is None and migrate.current_revision(review.engine) == "0002"
    assert review.settings.votes_per_image == 3 and review.settings.public_url == ""
    with review.sessions() as s:
        assert s.get(Meta, "secret") is None
    session = sign_in_rater(review, "alice-link")  # her link still works; the cookie gets a session id
    assert session and session != "alice-link" and session_rater(review, session).name == "alice"
    assert session_rater(review, "alice-link") is None  # an old cookie holding the invite token does not


def test_selection_all_sample_and_evaluation_candidates(output, tmp_path):
    everything = choose(output["root"])
    assert len(everything) == output["n_accepted"] == 23
    sample = choose(output["root"], "sample", per_group=2, seed=1)
    assert sample.groupby("group").size().tolist() == [2, 2, 2, 2]
    assert sample.equals(choose(output["root"], "sample", per_group=2, seed=1))
    ids = sorted(everything["id"])
    # i13's predictions contract: two models; ids[0] wrong for both → candidate, ids[1] right for one → not.
    preds = pd.DataFrame({"id": [ids[0], ids[0], ids[1], ids[1]], "model": ["a", "b", "a", "b"],
                          "y": [0, 0, 1, 1], "background": "grass", "top5": [[3, 0], [1, 0], [1, 0], [0, 1]],
                          "top5_scores": [[0.6, 0.4]] * 4})
    preds.to_parquet(tmp_path / "predictions.parquet")
    assert choose(output["root"], "candidates", predictions=str(tmp_path / "predictions.parquet"))["id"].tolist() \
        == [ids[0]]
    with pytest.raises(FFRError, match="selection 'nope'"):
        choose(output["root"], "nope")


def test_tasks_give_each_image_k_votes_from_k_distinct_raters_fewest_first(output):
    review = start_review(output["root"], votes=3, task_size=5)
    for name in ("a", "b", "c", "d"):
        add_rater(review, name)
    settings = review.settings
    with review.sessions() as s:
        _, first = open_task(s, 1, settings, now=100.0)
        again = open_task(s, 1, settings, now=101.0)  # a reload returns the same open task
        _, second = open_task(s, 2, settings, now=102.0)
    assert again[1] == first and len(first) == 5
    assert not set(first) & set(second), "fewest-first: b gets untouched images while a's are leased"
    # a abandons the task; after the lease timeout c may take those images again
    late = 100.0 + settings.lease_seconds + 1
    with review.sessions() as s:
        for rater in (3, 4):
            while True:
                _, task = open_task(s, rater, settings, now=late)
                if not task:
                    break
                for i in task:
                    assert record_vote(review.sessions, rater, i, True, False, settings) is Outcome.RECORDED
    assert rate_everything(review, ["e", "f"]) > 0
    with review.sessions() as s:
        per_image = dict(s.execute(select(Vote.image_id, func.count()).group_by(Vote.image_id)).all())
        distinct = s.scalar(select(func.count()).select_from(select(Vote.image_id, Vote.rater_id).distinct()
                                                             .subquery()))
        counters = dict(s.execute(select(ReviewImage.id, ReviewImage.n_votes)).all())
    assert set(per_image.values()) == {3} and len(per_image) == 23
    assert distinct == sum(per_image.values()) and counters == per_image
    # a vote on an image nobody assigned to the rater is refused; a repeated vote is a no-op
    some = next(iter(per_image))
    assert record_vote(review.sessions, 1, "g0000-999999", True, False, settings) is Outcome.NOT_ASSIGNED
    voter = select(Vote.rater_id).where(Vote.image_id == some).limit(1)
    with review.sessions() as s:
        rater = s.scalar(voter)
    assert record_vote(review.sessions, rater, some, False, True, settings) is Outcome.DUPLICATE


@pytest.mark.parametrize("votes,present,unsafe,m,expected", [
    (5, 5, 0, 5, ACCEPT), (5, 4, 0, 5, REJECT), (5, 5, 1, 5, REJECT), (5, 4, 0, 4, ACCEPT),
    (3, 3, 0, 5, PENDING), (1, 0, 0, 5, REJECT), (2, 2, 1, 5, REJECT), (4, 3, 0, 4, PENDING),
])
def test_veto_rule(votes, present, unsafe, m, expected):
    assert veto_decision(votes, present, unsafe, 5, m) == expected


def _decide(name: str, image_id: str) -> bool:
    """Rater 'strict' says absent for every image of group 3; everyone else says present."""
    return not (name == "strict" and image_id.startswith("g0003"))


def test_export_feeds_the_synthetic_reader_and_a_topup(output):
    review = start_review(output["root"], votes=3)
    with pytest.raises(FFRError, match="ffr review export"):
        accepted_ids(output["root"])
    rate_everything(review, ["strict", "b", "c"], present=_decide,
                    unsafe=lambda name, image_id: name == "c" and image_id == "g0001-000000")
    summary = export(review)
    assert summary["review_rejected"] == 6 + 1 and summary["review_pending"] == 0
    kept = accepted_ids(output["root"])
    assert len(kept) == 23 - 7 and "g0001-000000" not in kept and not any(i.startswith("g0003") for i in kept)
    plain = ffr.datasets.create("synthetic", root=output["root"])["train"]
    reviewed = ffr.datasets.create("synthetic", root=output["root"], review="accepted")["train"]
    assert len(plain) == 23 and len(reviewed) == 16 and set(reviewed.table["id"]) == kept
    topup = json.loads(open(f"{output['root']}/review/topup.json").read())
    # budget 6 per group; group 0 lost one to generation's filters, group 1 one to review, group 3 all six
    assert topup["shortfall"] == {"0,0": 1, "0,1": 1, "1,1": 6}
    assert topup["budget"]["per_group"] == {"0,0": 7, "0,1": 7, "1,0": 6, "1,1": 12}
    assert len(topup["rejected_ids"]) == 7 and "budget.per_group=" in topup["command"]
    with pytest.raises(FFRError, match="review option 'yes'"):
        ffr.datasets.create("synthetic", root=output["root"], review="yes")


def test_review_of_an_s3_output_reads_images_by_byte_range_and_exports_there(s3_bucket, tmp_path):
    info = build_review_output(f"{s3_bucket}/out", assets=f"{s3_bucket}/assets")
    source = ImageSource(info["root"], info["references"], info["definitions"])
    local = build_review_output(str(tmp_path / "local"))
    local_source = ImageSource(local["root"])
    for image_id in ("g0000-000000", "g0003-000005"):
        assert source.generated(image_id) == local_source.generated(image_id)
    assert source.has_guide("g0000-000000") and source.guide_png("g0000-000000")[:4] == b"\x89PNG"
    assert source.reference_count(0) == 4 and source.reference(0, 3)[1] == "image/png"
    review = start_review(info["root"], votes=1, task_size=25, db=f"sqlite:///{tmp_path}/s3-review.sqlite")
    rate_everything(review, ["solo"], present=lambda name, image_id: image_id != "g0002-000001")
    export(review)
    assert len(accepted_ids(info["root"])) == 22


def test_export_changes_a_training_runs_synthetic_stage(tmp_path, capsys):
    """FFR's stage 1 on colored digits draws ``need`` synthetic images per group (231 with today's split):
    reviewing 40 per group (5 votes) that reject 25 of group (0, 1) takes exactly those out of the training
    set; rejecting enough more that the group falls short is a clear error that the top-up request answers."""
    import pipelines
    from ffr.training.config import parse
    from ffr.training.data import load_experiment_data

    root = str(tmp_path / "digits")
    pipelines.generate({"recipe": "colored-digits", "output": root, "seed": 0, "budget": {"per_group": 300},
                        "shard_size": 600, "batch_size": 300, "runner": "local", "progress": False})
    review = start_review(root, "sample", votes=5, task_size=40, per_group=40)
    with review.sessions() as s:
        sampled = sorted(s.scalars(select(ReviewImage.id).where(ReviewImage.group == 1)))
    bad = set(sampled[:25])
    rate_everything(review, [f"r{i}" for i in range(5)], present=lambda name, image_id: image_id not in bad)
    export(review)

    def stage1(review_option):
        cfg = parse({"dataset": "colored-digits", "dataset_options": {"bias_ratio": 0.95}, "variant": "ffr",
                     "synthetic_root": root, "synthetic_review": review_option, "backbone": "small-cnn",
                     "pretrained": None})
        return load_experiment_data(cfg).stages[1].train

    before, after = stage1(None), stage1("accepted")
    counts = lambda split: split.table.groupby(["y", "b"]).size().to_dict()  # noqa: E731
    need = counts(before)[(0, 0)]
    assert 100 < need <= 300 - 25 and counts(before) == counts(after) == {g: need for g in counts(before)}
    rejected_in_before = len(set(before.table["id"]) & bad)
    assert rejected_in_before > 15 and not set(after.table["id"]) & bad
    with capsys.disabled():
        print(f"\n[review→training] stage-1 synthetic per group {need} both ways; "
              f"pool 1200 → {len(accepted_ids(root))}; rejected images in the stage-1 set: "
              f"{rejected_in_before} without review, 0 with review: accepted")

    left = 300 - 25 - (need - 4)  # reject this many more and group (0, 1) keeps need - 4 images
    more = sorted(set(choose(root)["id"][choose(root)["group"] == 1]) - set(sampled))[:left]
    with review.sessions.begin() as s:
        add_images(s, choose(root).loc[lambda d: d["id"].isin(more)])
    bad |= set(more)
    rate_everything(review, [f"q{i}" for i in range(5)], present=lambda name, image_id: image_id not in bad)
    export(review)
    with pytest.raises(FFRError, match=rf"{need - 4} images of group \(y=0, b=1\) but {need} are needed"):
        stage1("accepted")
    topup = json.loads(open(f"{root}/review/topup.json").read())  # short of the generated budget of 300
    shortfall = 300 - (need - 4)
    assert topup["shortfall"] == {"0,1": shortfall} and topup["budget"]["per_group"]["0,1"] == 300 + shortfall


def test_cli_init_invite_progress_export_and_one_line_errors(output, capsys):
    from ffr.cli import main

    root = output["root"]
    assert main(["review", "init", "--data", root, "--select", "sample", "--per-group", "2", "--votes", "1"]) == 0
    out = capsys.readouterr().out
    assert "8 image(s) added" in out and "/admin/" in out
    assert main(["review", "invite", "alice", "--data", root, "--base-url", "http://127.0.0.1:9000"]) == 0
    link = capsys.readouterr().out.strip()
    assert link.startswith("http://127.0.0.1:9000/r/") and len(link) > 40
    review, _ = open_review(root)
    with review.sessions() as s:
        from ffr.review.db import Rater

        stored = s.scalar(select(Rater.token_hash))
    assert link.rsplit("/", 1)[1] not in stored  # only the hash is stored
    assert main(["review", "invite", "alice", "--data", root]) == 2
    assert "exists already" in capsys.readouterr().err
    assert main(["review", "progress", "--data", root]) == 0
    assert "goldfish/grass" in capsys.readouterr().out
    assert main(["review", "export", "--data", root, "--min-present", "3"]) == 2
    assert "--min-present 3; expected 1..1" in capsys.readouterr().err
    assert main(["review", "export", "--data", root, "--db", "nosuchdialect://x"]) == 2
    assert "cannot open review database" in capsys.readouterr().err
    assert main(["review", "export", "--data", root]) == 0
    assert len(accepted_ids(root)) == 23 - 8  # 8 under review and pending (no votes yet): not accepted


def test_cli_public_url_is_checked_stored_and_used_for_the_links(output, capsys):
    from ffr.cli import main

    root = output["root"]
    assert main(["review", "init", "--data", root, "--public-url", "https://review.example.org/review"]) == 2
    assert "--public-url 'https://review.example.org/review'; expected http(s)://host[:port]" in capsys.readouterr().err
    assert main(["review", "init", "--data", root, "--public-url", "https://review.example.org"]) == 0
    assert "admin link (shown once; 'ffr review admin-link' makes a new one): https://review.example.org/admin/" \
        in capsys.readouterr().out
    assert main(["review", "invite", "ann", "--data", root]) == 0
    assert capsys.readouterr().out.startswith("https://review.example.org/r/")
    assert main(["review", "revoke", "nobody", "--data", root]) == 2
    assert "no rater named 'nobody' (raters: ann)" in capsys.readouterr().err
    assert main(["review", "revoke", "ann", "--data", root]) == 0
    assert main(["review", "invite", "ann", "--data", root]) == 2
    assert "'ann' was revoked; --reissue gives them a new link" in capsys.readouterr().err


def test_a_database_from_before_the_private_folder_is_used_in_place_and_tightened(output, tmp_path, caplog):
    import os
    import stat
    from pathlib import Path

    root = output["root"]
    legacy = Path(root, "review", "review.sqlite")
    review, _ = open_review(root, f"sqlite:///{legacy}", create=True)
    review.engine.dispose()
    os.chmod(legacy, 0o644)
    with caplog.at_level("WARNING", logger="ffr.review"):
        again, admin = open_review(root)
    assert again.url == f"sqlite:///{legacy}" and admin is None and stat.S_IMODE(legacy.stat().st_mode) == 0o600
    assert "predates the private folder; stop the server, then move it" in caplog.text
    chosen = tmp_path / "chosen" / "deeper" / "r.sqlite"  # --db in a folder that does not exist yet
    open_review(root, f"sqlite:///{chosen}", create=True)
    assert stat.S_IMODE(chosen.parent.stat().st_mode) == 0o700 and stat.S_IMODE(chosen.stat().st_mode) == 0o600
