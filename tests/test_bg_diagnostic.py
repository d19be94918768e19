"""FFR's (B, G) diagnostic on the embedded benchmark, with the procedural renderer's generator signature as the
dial: held-out synthetic accuracy per (class, bias, source) and a real-vs-synthetic probe on frozen features."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import pipelines
from ffr import datasets, runs, tracking
from ffr.demo import synthetic_budget
from ffr.groups import group_counts
from ffr.training import run_experiment
from pipelines.backends import procedural

HOLDOUT = 60
TINY = {"dataset": "colored-digits", "variant": "usb", "backbone": "small-cnn", "backbone_options": {"width": 8},
        "pretrained": None, "image_size": 32, "epochs": 1, "batch_size": 256, "executor": "local",
        "cache_in_memory": True, "diagnostic": {"holdout_per_group": HOLDOUT}}


def test_signature_is_a_fixed_periodic_pattern_and_zero_changes_nothing():
    row = {"seed": 7, "y": 1, "b": 0, "glyph": "7", "background_rgb": [190, 45, 45], "ink_rgb": [245, 245, 245],
           "style": "optdigits", "width": 32, "height": 32}
    render = {s: np.asarray(procedural.ProceduralBackend(procedural.ProceduralOptions(signature=s)).render(row),
                            dtype=float) for s in (0.0, 16.0)}
    plain = np.asarray(procedural.ProceduralBackend(procedural.ProceduralOptions()).render(row), dtype=float)
    assert np.array_equal(render[0.0], plain)
    added = render[16.0] - plain  # the same for every image: one generator's fingerprint, period 8
    same = np.abs(added[:8, :8] - added[8:16, 16:24]) <= 1  # up to rounding, and clipping at white ink
    assert same.mean() > 0.9
    assert 10 < np.sqrt((added ** 2).mean()) < 20


@pytest.fixture(scope="module")
def budget() -> dict[str, int]:
    real = datasets.create("colored-digits", bias_ratio=0.95, seed=0)
    return {k: n + HOLDOUT for k, n in synthetic_budget(group_counts(real["train"].y, real["train"].b)).items()}


def _diagnosed_run(tmp_path, budget, strength: float, mlflow: bool = False) -> dict:
    root = str(tmp_path / f"synthetic-{strength:g}")
    backend = {"name": "procedural", "settings": {"signature": strength}} if strength else {}
    pipelines.generate({"recipe": "colored-digits", "output": root, "seed": 0, "budget": {"per_group": budget},
                        "shard_size": 2000, "batch_size": 256, "runner": "local", "progress": False,
                        "backend": backend})
    return run_experiment({**TINY, "synthetic_root": root, "storage_path": str(tmp_path / "runs"),
                           "mlflow": {"enabled": mlflow}})


def test_probe_accuracy_rises_with_the_signature_strength(tmp_path, budget, capsys):
    results = {s: _diagnosed_run(tmp_path, budget, s) for s in (0.0, 8.0, 32.0)}
    probe = {s: r[runs.DIAGNOSTIC]["probe"]["accuracy"] for s, r in results.items()}
    assert probe[0.0] < probe[8.0] < probe[32.0] or probe[8.0] == probe[32.0] == 1.0, probe
    assert probe[32.0] - probe[0.0] >= 0.2 and probe[32.0] >= 0.9, probe

    diagnostic = results[32.0][runs.DIAGNOSTIC]
    assert diagnostic["probe"]["n_fit"] == diagnostic["probe"]["n_test"] > 50  # balanced halves
    names = {f"{c}/{b}/{s}" for c in ("small (0-4)", "large (5-9)") for b in ("red", "green")
             for s in ("real", "synthetic")}
    assert set(diagnostic["accuracy"]) == names and set(diagnostic["sizes"]) == names
    assert 0 < min(n for k, n in diagnostic["sizes"].items() if k.endswith("synthetic")) <= HOLDOUT
    assert {"worst_group_acc", "mean_group_acc", "acc_group_0"} <= set(diagnostic["synthetic"])

    # the held-out images are none that the run trained on
    directory = runs.run_dir(str(tmp_path / "runs"), results[32.0]["run_name"])
    plan = pd.read_parquet(f"{directory}/plan.parquet")
    heldout = set(plan.loc[plan["@table"] == "synthetic/heldout", "key"])
    trained = {k.partition("\0")[2] for k in plan.loc[plan["@table"] == "stage/train", "key"] if k.startswith("1\0")}
    assert len(heldout) == sum(n for k, n in diagnostic["sizes"].items() if k.endswith("synthetic"))
    assert heldout and trained and not heldout & trained

    # the result file, MLflow's metrics and the report carry it
    assert runs.read_result(directory)[runs.DIAGNOSTIC]["probe"]["accuracy"] == probe[32.0]
    metrics = tracking.final_metrics(results[32.0])
    assert metrics["diag_probe_real_vs_synthetic_acc"] == pytest.approx(probe[32.0])
    assert metrics["diag_acc/small 0-4/red/synthetic"] == diagnostic["accuracy"]["small (0-4)/red/synthetic"]
    assert metrics["diag_synthetic_worst_group_acc"] == diagnostic["synthetic"]["worst_group_acc"]

    from ffr.cli import main

    capsys.readouterr()
    assert main(["report", str(tmp_path / "runs"), "--select", "none"]) == 0
    printed = capsys.readouterr().out
    table = printed.split("(B, G) diagnostic:", 1)[1].split("\n\n", 1)[0]
    assert "probe real-vs-synthetic acc" in table and "acc small (0-4)/red/synthetic" in table
    assert any(line.startswith("erm / USB") for line in table.splitlines())
