"""ffr.runs: the run directory format that training writes and ``ffr report``, sweeps and the demo read."""

from __future__ import annotations

import json

import pytest

from ffr import runs
from ffr.errors import FFRError
from ffr.training.loop import save_state


def test_checkpoints_are_named_and_found_by_epoch(tmp_path):
    d = str(tmp_path / "run")
    for epoch in (3, 12):
        (tmp_path / "run" / runs.checkpoint_name(epoch)).mkdir(parents=True)
        (tmp_path / "run" / runs.checkpoint_name(epoch) / runs.CHECKPOINT_FILE).write_bytes(b"x")
    (tmp_path / "run" / runs.checkpoint_name(20)).mkdir()  # killed before model.pt was written: not a checkpoint
    (tmp_path / "run" / "checkpoint_epochs_old").mkdir()  # not ours
    assert runs.checkpoint_dir(d, 3) == f"{d}/checkpoint_epoch0003"
    assert runs.saved_epochs(d) == [3, 12]
    assert runs.saved_epochs(str(tmp_path / "nowhere")) == []


def test_unfinished_runs_best_epoch_follows_trainings_rule(tmp_path):
    d = str(tmp_path / "run")
    curve = [0.2, float("nan"), 0.5, 0.5, 0.4]
    for epoch, wga in enumerate(curve):
        runs.append_metrics(d, {"stage": 2, "epoch": epoch, "val_worst_group_acc": wga})
    record = runs.read_run(d)
    chosen = max(range(len(curve)), key=lambda e: runs.selection_score(curve[e], e))
    assert record.status == "unfinished" and record.best() == (chosen, 0.5) == (2, 0.5)
    runs.write_result(d, {"best_epoch": 3, "best_val_worst_group_acc": 0.5})  # a finished run: its result says
    assert runs.read_run(d).best() == (3, 0.5)


def test_a_torn_metrics_line_is_skipped_and_the_next_epoch_appends(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    (d / runs.METRICS).write_text(json.dumps({"stage": 2, "epoch": 0, "train_loss": 1.0}) + '\n{"stage": 2, "ep')
    with pytest.warns(UserWarning, match="skipped 1 unreadable line"):
        runs.append_metrics(str(d), {"stage": 2, "epoch": 1, "train_loss": 0.5})
    assert [r["epoch"] for r in runs.read_metrics(str(d))] == [0, 1]


def _stage1(root, name, seed, lr, wga, stage=1):
    d = str(root / name)
    # as the demo writes them: the split's seed and the synthetic data follow the run's seed
    runs.write_config(d, {"dataset": "colored-digits", "dataset_options": {"bias_ratio": 0.9, "seed": seed},
                          "synthetic_root": f"/data/synthetic/seed-{seed}", "seed": seed, "lr": lr,
                          "run_name": name, "storage_path": str(root)})
    save_state({"model": {}}, f"{d}/{runs.checkpoint_name(0)}")
    runs.write_result(d, {"run_name": name, "stage": stage, "seed": seed, "best_val_worst_group_acc": wga,
                          "checkpoint": f"{d}/{runs.checkpoint_name(0)}"})
    return d


def test_best_stage1_setting_averages_seeds_that_differ_only_in_seed_dependent_settings(tmp_path):
    # lr 0.1 has the best single run, lr 0.01 the best mean over seeds; runs of one lr differ in the split seed
    # and synthetic_root as well, and are still seeds of one setting (the grouping ffr report uses)
    _stage1(tmp_path, "a0", 0, 0.1, 0.90)
    _stage1(tmp_path, "a1", 1, 0.1, 0.40)
    b0 = _stage1(tmp_path, "b0", 0, 0.01, 0.80)
    b1 = _stage1(tmp_path, "b1", 1, 0.01, 0.75)
    assert runs.best_run_of_sweep(str(tmp_path), seed=0) == b0
    assert runs.best_run_of_sweep(str(tmp_path), seed=1) == b1
    assert runs.read_run(b0).setting_key() == runs.read_run(b1).setting_key()


def test_best_stage1_run_is_chosen_by_mean_val_wga_over_seeds(tmp_path):
    # lr 0.1 has the single best run, but lr 0.01 is better on average over seeds (FFR's get_best_hyper).
    _stage1(tmp_path, "a0", 0, 0.1, 0.90)
    _stage1(tmp_path, "a1", 1, 0.1, 0.40)
    b0 = _stage1(tmp_path, "b0", 0, 0.01, 0.80)
    b1 = _stage1(tmp_path, "b1", 1, 0.01, 0.75)
    _stage1(tmp_path, "c0", 0, 0.5, 0.99, stage=2)  # stage-2 runs are not candidates
    assert runs.best_run_of_sweep(str(tmp_path), seed=0) == b0
    assert runs.best_run_of_sweep(str(tmp_path), seed=1) == b1
    assert runs.resolve_checkpoint(f"best:{tmp_path}", 1) == f"{b1}/checkpoint_epoch0000"
    assert runs.resolve_checkpoint(b0, 0) == f"{b0}/checkpoint_epoch0000"
    assert runs.resolve_checkpoint(f"{b0}/checkpoint_epoch0000", 0) == f"{b0}/checkpoint_epoch0000"
    with pytest.raises(FFRError, match="seed 7"):
        runs.best_run_of_sweep(str(tmp_path), seed=7)
    with pytest.raises(FFRError, match="neither a checkpoint"):
        runs.resolve_checkpoint(str(tmp_path / "nowhere"), 0)
