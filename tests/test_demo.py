"""``ffr demo``'s grid: in-process runs (executor local), a Tune grid over seeds, the paper-style table."""

import os

import pytest

from ffr import demo, runs
from ffr.training import local, run_experiment

TINY = {"dataset": "colored-digits", "dataset_options": {"bias_ratio": 0.95}, "backbone": "small-cnn",
        "backbone_options": {"width": 8}, "pretrained": None, "image_size": 32, "batch_size": 256,
        "executor": "local", "cache_in_memory": True, "keep_checkpoints": 1}


def test_local_executor_keeps_best_and_latest_and_resumes(tmp_path):
    import ray

    ray_was_up = ray.is_initialized()
    cfg = {**TINY, "epochs": 3, "storage_path": str(tmp_path)}
    result = run_experiment(cfg)
    directory = runs.run_dir(str(tmp_path), result["run_name"])
    epochs = runs.saved_epochs(directory)
    assert result["checkpoint"] == runs.checkpoint_dir(directory, result["best_epoch"])
    assert set(epochs) == {result["best_epoch"], 3}  # keep_checkpoints=1: the best, plus the latest (epoch 3 of 3)
    assert ray.is_initialized() == ray_was_up  # no Ray needed

    # An interrupted run: no result, and its last epoch's checkpoint lost. Rerunning redoes only what is missing.
    os.remove(os.path.join(directory, runs.RESULT))
    if epochs[-1] != result["best_epoch"]:
        local.LocalSession(directory, 1, None).restore()
        import shutil

        shutil.rmtree(runs.checkpoint_dir(directory, epochs[-1]))
    again = run_experiment(cfg)
    assert [r["epoch"] for r in runs.read_metrics(directory)] == [1, 2, 3]
    assert again["best_val_worst_group_acc"] >= 0 and runs.saved_epochs(directory)[-1] == 3


def test_grid_table_and_paired_comparison_report_what_exceeds_the_seed_spread():
    seeds = range(5)
    wga = {("none", "erm"): {s: 0.40 + 0.05 * (s % 2) for s in seeds},
           ("ffr", "erm"): {s: 0.60 + 0.05 * (s % 2) + 0.01 * s for s in seeds},  # +20 ± 1.6 in every seed
           ("usb", "erm"): {s: 0.40 + (0.1 if s % 2 else -0.1) for s in seeds},  # ± 10, no consistent sign
           (demo.STAGE1_ONLY, "erm"): {0: 0.5}}
    table = demo.grid_table(wga, ("none", "usb", "ffr"), ("erm", "groupdro"))
    assert "| none | 42.0 ± 2.7 (n=5) | – |" in table and "| FFR, stage 1 only | 50.0 (n=1) |  |" in table
    comparisons = {(c["higher"][0], c["lower"][0]): c for c in demo.paired_comparisons(wga)}
    assert comparisons[("ffr", "none")]["exceeds"] and comparisons[("ffr", "none")]["wins"] == 5
    usb_none = comparisons.get(("usb", "none")) or comparisons[("none", "usb")]
    assert not usb_none["exceeds"] and usb_none["n"] == 5
    assert (demo.STAGE1_ONLY, "none") not in comparisons  # one seed: nothing to pair
    text = demo.comparison_text(demo.paired_comparisons(wga))
    assert text.startswith("Differences larger than the seed spread (paired over seeds, p < 0.05): FFR+ERM > ")


@pytest.mark.slow
def test_demo_runs_the_grid_over_seeds_as_tune_trials(ray_cluster, tmp_path, capsys):
    path = demo.run_demo(str(tmp_path / "out"), seeds=(0, 1), epochs=1, stage1_epochs=1, variants=("none", "ffr"),
                         methods=("erm",))
    table = open(path).read()
    for row in ("| none | ", "| FFR | ", "| FFR, stage 1 only | "):
        assert row in table and "(n=2)" in table.split(row)[1].splitlines()[0]
    assert "Differences larger than the seed spread" in table and "wall time" in table
    # `ffr report --select val-wga` on the demo's runs: every cell once per seed (n=2), the demo table's means
    from ffr.report import collect
    from ffr.runs.protocol import select

    configs = {(s, v, m): demo.train_config(v, m, s, None, str(tmp_path / "out" / "runs"), epochs=1, stage1_epochs=1)
               for s in (0, 1) for v in ("none", "ffr") for m in ("erm",)}
    for (s, v, _m), config in configs.items():
        config["synthetic_root"] = str(tmp_path / "out" / "synthetic" / f"seed-{s}") if v != "none" else None
    wga = demo.collect_wga(configs)
    cells = select(collect([str(tmp_path / "out" / "runs")]), "val-wga")
    assert len(cells) == 3 and all(c.n == 2 for c in cells)
    for cell in cells:
        row = demo.STAGE1_ONLY if cell.stage1_only else cell.variant
        assert cell.test["worst_group_acc"].mean == pytest.approx(sum(wga[(row, "erm")].values()) / 2)
    # Rerunning trains nothing: every run is found finished.
    capsys.readouterr()
    demo.run_demo(str(tmp_path / "out"), seeds=(0, 1), epochs=1, stage1_epochs=1, variants=("none", "ffr"),
                  methods=("erm",))
    assert " epoch 1/1 " not in capsys.readouterr().out


@pytest.mark.slow
def test_gap_study_machinery_on_a_tiny_grid(ray_cluster, tmp_path, capsys):
    """`make gap-study` in miniature: synthetic sets per signature strength, one ffr study, the table by strength
    with the (B, G) diagnostic, and the plot."""
    path = demo.run_gap_study(str(tmp_path / "gap"), strengths=(0.0, 24.0), seeds=(0,), epochs=1, stage1_epochs=1,
                              variants=("none", "usb"), methods=("erm",))
    text = open(path).read()
    assert "| test WGA % | signature 0 | signature 24 |" in text
    none = next(line for line in text.splitlines() if line.startswith("| none+ERM |"))
    assert none.count("(n=1)") == 2 and none.split("|")[2] == none.split("|")[3]  # one none run, shared
    probe = next(line for line in text.split("real-vs-synthetic probe acc")[1].splitlines() if "USB+ERM" in line)
    assert probe.count("(n=1)") == 2
    assert (tmp_path / "gap" / "report" / "gap.png").stat().st_size > 10_000
    assert "3 training runs (3 trained by this call)" in text and "wall time" in text
