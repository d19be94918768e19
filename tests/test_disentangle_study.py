"""The embedded disentanglement study end to end, tiny: data, "ImageNet" pretraining, ERM / disentangle / no
penalty runs, probes and the frozen-feature correlation table (``ffr d3s disentangle-demo`` at its smallest)."""

from __future__ import annotations

import json

import pytest

from ffr.d3s.disentangle_demo import SPLIT, StudyConfig, run_study

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

TINY = StudyConfig(seeds=[0], image_size=16, width=4, bg_features=4, d3s_per_group=2, d3s_val_per_group=2,
                   plain_per_class=4, pretrain_epochs=1, epochs=1, steps_per_epoch=6, warmup_steps=3, erm_steps=4,
                   method_hparams={"probe": {"steps": 50}}, correlation_steps=50)


def test_the_embedded_study_runs_end_to_end_and_reuses_finished_runs(tmp_path):
    study = run_study(tmp_path / "study", config=TINY)
    report = (tmp_path / "study" / "report.md").read_text()
    assert "background from fg" in report and "anti-corr. WGA" in report and "Wall time" in report
    probes = study["probes"][0]
    for run in ("disentangled", "no penalty"):
        assert set(probes[run]) == {"class_from_fg", "background_from_bg", "class_from_bg", "background_from_fg",
                                    "class_from_bg_standardized", "background_from_fg_standardized"}
        assert all(0 <= p["val"] <= 1 for p in probes[run].values())
    rows = study["correlation"][0]
    assert [(r["model"], r["features"]) for r in rows] == [("ImageNet-pretrained ERM", "all"), ("ERM", "all"),
                                                           ("disentangled", "fg"), ("no penalty", "fg")]
    assert rows[1]["feature_dim"] == 16 and rows[2]["feature_dim"] == 12  # small-cnn width 4: 16 = 12 fg + 4 bg
    split = json.loads((tmp_path / "study" / "d3s-train" / "splits" / SPLIT / "split.json").read_text())
    assert split["assignment"] == [2, 8, 4, 9, 1, 6, 7, 3, 0] and split["rows"]["correlated"] == 9 * 2
    metrics = sorted((tmp_path / "study" / "runs").glob("*/metrics.jsonl"))
    assert len(metrics) == 4  # pretraining, ERM, disentangled, no penalty
    stamps = [m.stat().st_mtime_ns for m in metrics]
    again = run_study(tmp_path / "study", config=TINY)  # finished runs are reused, not trained again
    assert [m.stat().st_mtime_ns for m in metrics] == stamps and again["probes"] == study["probes"]
