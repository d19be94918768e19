"""``ffr report`` on run directories built by hand from the run directory contract (local and moto S3)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from ffr import runs
from ffr.cli import main
from ffr.storage import filesystem

DIGITS_GROUPS = {0: "digit<5/red", 1: "digit<5/green", 2: "digit>=5/red", 3: "digit>=5/green"}
ANIMAL_GROUPS = {0: "landbird/land", 1: "landbird/water", 5: "waterbird/water", 4: "waterbird/land"}


def make_run(root: Path, name: str, *, dataset: str, variant: str, method: str, stage: int, seed: int,
             val_wga: list[float], test_groups: dict[int, float] | None, group_names: dict[int, str],
             extra_lines: str = "", bias_ratio: float = 0.95, lr: float = 1e-3,
             test_sizes: dict[int, int] | None = None, result_file: str = "ffr_result.json") -> Path:
    """One run directory as training writes it; ``test_groups=None`` leaves it unfinished (no result.json)."""
    run = root / name
    (run / "checkpoint_000000").mkdir(parents=True)
    (run / "checkpoint_000000" / "model.pt").write_bytes(b"\0" * 16)
    config = {"dataset": dataset, "dataset_options": {"root": "/data", "bias_ratio": bias_ratio, "seed": seed},
              "variant": variant, "method": method, "stage": stage, "seed": seed, "run_name": name, "role": "train",
              "lr": lr, "storage_path": str(root), "num_workers": 1}
    (run / "config.json").write_text(json.dumps(config))
    lines = []
    for epoch, wga in enumerate(val_wga):
        record = {"stage": stage, "epoch": epoch, "train_loss": 1.0 / (epoch + 1), "val_worst_group_acc": wga,
                  "val_mean_group_acc": wga + 0.1, "val_overall_acc": wga + 0.2}
        record.update({f"val_acc_group_{g}": wga for g in group_names})
        lines.append(json.dumps(record))
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n" + extra_lines)
    if test_groups is not None:
        best = max(range(len(val_wga)), key=lambda e: (val_wga[e], -e))
        accs = list(test_groups.values())
        test = {"worst_group_acc": min(accs), "mean_group_acc": sum(accs) / len(accs), "overall_acc": 0.9}
        test.update({f"acc_group_{g}": a for g, a in test_groups.items()})
        result = {"run_name": name, "dataset": dataset, "variant": variant, "method": method, "stage": stage,
                  "seed": seed, "best_epoch": best, "best_val_worst_group_acc": val_wga[best],
                  "group_names": {str(g): n for g, n in group_names.items()}, "test": test,
                  "val": {"worst_group_acc": val_wga[best]}, "checkpoint": str(run / "checkpoint_000000")}
        if test_sizes:
            result["group_sizes"] = {"test": {str(g): n for g, n in test_sizes.items()}}
        (run / result_file).write_text(json.dumps(result))
    return run


def build_runs(root: Path) -> Path:
    digits = dict(dataset="colored-digits", group_names=DIGITS_GROUPS)
    make_run(root, "cd-none-erm-s0", variant="none", method="erm", stage=2, seed=0, val_wga=[0.2, 0.5, 0.4],
             test_groups={0: 0.9, 1: 0.6, 2: 0.7, 3: 0.95}, **digits)
    make_run(root, "cd-none-erm-s1", variant="none", method="erm", stage=2, seed=1, val_wga=[0.3, 0.6, 0.6],
             test_groups={0: 0.85, 1: 0.8, 2: 0.9, 3: 0.99}, **digits)
    # a sweep folder one level deeper, with FFR's stage 1 and an unfinished stage 2 (torn last line)
    make_run(root / "sweep", "cd-ffr-stage1-s0", variant="ffr", method="erm", stage=1, seed=0,
             val_wga=[0.5, 0.7], test_groups={0: 0.8, 1: 0.75, 2: 0.8, 3: 0.8}, **digits)
    make_run(root / "sweep", "cd-ffr-groupdro-s0", variant="ffr", method="groupdro", stage=2, seed=0,
             val_wga=[0.4, 0.55, 0.55], test_groups=None, extra_lines='{"stage": 2, "epoch": 3, "val_wor', **digits)
    # Ray Tune's own trial folder in the same sweep tree: its result.json is JSON lines, not an ffr run
    tune_trial = root / "sweep" / "tune-abc_00000"
    tune_trial.mkdir(parents=True)
    (tune_trial / "result.json").write_text('{"training_iteration": 1}\n{"training_iteration": 2}\n')
    (tune_trial / "params.json").write_text('{"method": "erm"}')
    make_run(root, "wb-asb-dro-s0", dataset="waterbirds", variant="asb", method="groupdro", stage=2, seed=0,
             val_wga=[0.1, 0.3], test_groups={0: 0.99, 1: 0.5, 4: 0.625, 5: 0.97}, group_names=ANIMAL_GROUPS)
    return root


def test_report_prints_tables_and_writes_files(tmp_path, capsys):
    runs = build_runs(tmp_path / "runs")
    out = tmp_path / "report"
    with pytest.warns(UserWarning, match="skipped 1 unreadable line"):
        assert main(["report", str(runs), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "dataset: colored-digits" in printed and "dataset: waterbirds" in printed
    for name in [*DIGITS_GROUPS.values(), *ANIMAL_GROUPS.values()]:
        assert name in printed
    line = next(x for x in printed.splitlines() if x.startswith("wb-asb-dro-s0"))
    assert line.split()[1:9] == ["asb", "groupdro", "2", "0", "finished", "1", "30.0", "50.0"]

    table = pd.read_csv(out / "report.csv").set_index("run")
    assert len(table) == 5
    erm0 = table.loc["cd-none-erm-s0"]
    assert (erm0["best_epoch"], erm0["val_wga"], erm0["test_wga"]) == (1, 0.5, 0.6)
    assert erm0["test_acc[digit>=5/red]"] == pytest.approx(0.7)
    assert pd.isna(erm0["test_acc[waterbird/land]"])
    assert table.loc["wb-asb-dro-s0", "test_acc[waterbird/land]"] == pytest.approx(0.625)
    unfinished = table.loc["cd-ffr-groupdro-s0"]
    assert unfinished["status"] == "unfinished"
    assert unfinished["best_epoch"] == 1 and unfinished["val_wga"] == 0.55  # earliest epoch on a tie
    assert pd.isna(unfinished["test_wga"])
    assert table.loc["cd-ffr-stage1-s0", "stage"] == 1

    report = (out / "report.md").read_text()
    assert "## colored-digits" in report and "## waterbirds" in report
    assert "| colored-digits | erm / none | 0.95 | 0,1 | 55.0 ± 7.1 (n=2) | 70.0 ± 14.1 (n=2) |" in report
    assert "| erm / none | 70.0 ± 14.1 (n=2) |" in report and "| FFR, stage 1 only | 75.0 (n=1) |" in report
    for png in ("test_wga_colored-digits.png", "val_wga_curves_colored-digits.png",
                "test_group_acc_colored-digits.png", "val_wga_curves_waterbirds.png", "test_group_acc_waterbirds.png"):
        assert f"]({png})" in report
        with Image.open(out / png) as image:
            assert image.format == "PNG" and image.size[0] > 200


def test_resumed_run_keeps_the_latest_record_of_a_repeated_epoch(tmp_path, capsys):
    run = make_run(tmp_path / "runs", "resumed", dataset="colored-digits", variant="none", method="erm", stage=2,
                   seed=0, val_wga=[0.2, 0.3], test_groups=None, group_names=DIGITS_GROUPS)
    # the run died after epoch 1 and redid it from the epoch-0 checkpoint with a different result
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"stage": 2, "epoch": 1, "val_worst_group_acc": 0.1}) + "\n")
    assert main(["report", str(tmp_path / "runs")]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("resumed"))
    assert line.split()[5:8] == ["unfinished", "0", "20.0"]
    assert not (tmp_path / "report").exists()  # without --out nothing is written


def test_report_on_s3_runs_to_s3_out(tmp_path, s3_bucket, capsys):
    runs = build_runs(tmp_path / "runs")
    fs, inner = filesystem(f"{s3_bucket}/experiments")
    fs.put(str(runs) + "/", inner, recursive=True)
    with pytest.warns(UserWarning):
        assert main(["report", f"{s3_bucket}/experiments", "--out", f"{s3_bucket}/report"]) == 0
    assert "cd-ffr-stage1-s0" in capsys.readouterr().out
    fs.invalidate_cache()
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{s3_bucket[5:]}/report", detail=False))
    assert "report.md" in names and "report.csv" in names and "protocol.tex" in names and len(names) == 11
    table = pd.read_csv(io.BytesIO(fs.cat_file(f"{s3_bucket[5:]}/report/report.csv")))
    assert set(table["run"]) == {"cd-none-erm-s0", "cd-none-erm-s1", "cd-ffr-stage1-s0", "cd-ffr-groupdro-s0",
                                 "wb-asb-dro-s0"}
    assert all(p.startswith(f"{s3_bucket}/experiments/") for p in table["path"])


def test_bad_inputs_give_one_line_and_exit_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing" in err and "does not exist" in err

    (tmp_path / "empty" / "x").mkdir(parents=True)
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no runs" in capsys.readouterr().err

    run = make_run(tmp_path / "runs", "r", dataset="d", variant="none", method="erm", stage=2, seed=0,
                   val_wga=[0.5], test_groups={0: 0.5}, group_names={0: "a/b"})
    (run / "ffr_result.json").write_text('{"run_name": "r", "test": ')
    assert main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{run}/ffr_result.json" in err and "not valid JSON" in err
    assert not (tmp_path / "out").exists()


def _paper_rows(printed: str, dataset: str) -> dict[str, list[str]]:
    """The paper table of one dataset as {row label: cells}, split on runs of 2+ spaces."""
    lines = printed.split(f"dataset: {dataset}  test worst-group accuracy", 1)[1].split("\n\n", 1)[0].splitlines()
    header = re.split(r"\s{2,}", lines[1].strip())
    rows = {re.split(r"\s{2,}", x.strip())[0]: re.split(r"\s{2,}", x.strip())[1:] for x in lines[3:]}
    return {"": header[1:], **rows}


def test_runs_that_differ_in_more_than_the_seed_land_in_different_cells(tmp_path, capsys):
    """Four runs, one seed each, used to print as 'seeds 4 … 55.0 ± 35.0'. Bias ratio → column; a
    hyperparameter → its own row; only seeds are averaged; n = 1 shows no ±; group sizes are shown."""
    digits = dict(dataset="colored-digits", group_names=DIGITS_GROUPS, stage=2, val_wga=[0.5],
                  test_sizes={0: 400, 1: 20, 2: 21, 3: 390})
    root = tmp_path / "runs"
    make_run(root, "b90-s0", variant="none", method="erm", seed=0, bias_ratio=0.9, test_groups={0: 0.9, 1: 0.2},
             **digits)
    make_run(root, "b90-s1", variant="none", method="erm", seed=1, bias_ratio=0.9, test_groups={0: 0.9, 1: 0.4},
             **digits)
    make_run(root, "b99-s0", variant="none", method="erm", seed=0, bias_ratio=0.99, test_groups={0: 0.9, 1: 0.9},
             **digits)
    make_run(root, "b99-lr-s0", variant="none", method="erm", seed=0, bias_ratio=0.99, lr=1e-2,
             test_groups={0: 0.9, 1: 0.7}, **digits)
    make_run(root, "usb-s0", variant="usb", method="erm", seed=0, bias_ratio=0.99, test_groups={0: 0.9, 1: 0.6},
             **digits)
    make_run(root, "dro-s0", variant="asb", method="groupdro", seed=0, bias_ratio=0.9, test_groups={0: 0.5},
             **digits)
    # a run directory from before the result file was renamed is still read
    make_run(root, "old-ffr-s0", variant="ffr", method="erm", seed=0, bias_ratio=0.9, test_groups={0: 0.8, 1: 0.3},
             result_file="result.json", **digits)
    assert main(["report", str(root), "--select", "none"]) == 0
    printed = capsys.readouterr().out
    rows = _paper_rows(printed, "colored-digits")
    assert rows[""] == ["bias 0.9", "bias 0.99"]
    assert list(rows) == ["", "erm / none [lr=0.001]", "erm / none [lr=0.01]", "erm / USB [lr=0.001]",
                          "erm / FFR [lr=0.001]", "groupdro / ASB [lr=0.001]"]
    assert rows["erm / none [lr=0.001]"] == ["30.0 ± 14.1 (n=2)", "90.0 (n=1)"]
    assert rows["erm / none [lr=0.01]"] == ["70.0 (n=1)"]  # the empty bias-0.9 cell is blank
    assert rows["erm / FFR [lr=0.001]"] == ["30.0 (n=1)"]
    assert not re.search(r"± [0-9.]+ \(n=1\)", printed)
    assert "digit<5/green (n=20)" in printed  # the size of the group beside its accuracy


def test_select_val_wga_picks_the_validation_winner_and_oracle_says_it_selects_on_test(tmp_path, capsys):
    """Setting A (lr 0.001) is better on validation, B (lr 0.01) on test, over 3 seeds."""
    digits = dict(dataset="colored-digits", group_names=DIGITS_GROUPS, stage=2, variant="none", method="erm",
                  test_sizes={0: 100, 1: 100, 2: 100, 3: 100})
    root = tmp_path / "runs"
    for seed in range(3):
        make_run(root, f"a-s{seed}", seed=seed, lr=1e-3, val_wga=[0.7 + 0.01 * seed],
                 test_groups={0: 0.9, 1: 0.50 + 0.02 * seed, 2: 0.9, 3: 0.9}, **digits)
        make_run(root, f"b-s{seed}", seed=seed, lr=1e-2, val_wga=[0.5 + 0.01 * seed],
                 test_groups={0: 0.9, 1: 0.80 + 0.02 * seed, 2: 0.9, 3: 0.9}, **digits)
    assert main(["report", str(root), "--select", "val-wga", "--out", str(tmp_path / "val")]) == 0
    printed = capsys.readouterr().out
    assert "ORACLE" not in printed
    assert _paper_rows(printed, "colored-digits")["erm / none"] == ["52.0 ± 2.0 (n=3; lr=0.001)"]
    protocol = next(x for x in printed.split("protocol table (val-wga)\n", 1)[1].splitlines() if x.startswith("erm"))
    assert re.split(r"\s{2,}", protocol)[2:5] == ["lr=0.001", "3", "52.0 ± 2.0 (SE 1.2)"]
    assert "Settings compared per cell: 2 (differing in lr)" in printed
    csv = pd.read_csv(tmp_path / "val" / "protocol.csv")
    assert json.loads(csv.loc[0, "selected"]) == {"lr": 0.001} and csv.loc[0, "n"] == 3
    assert csv.loc[0, "test_worst_group_acc_mean"] == pytest.approx(0.52)
    assert csv.loc[0, "test_worst_group_acc_se"] == pytest.approx(0.02 / 3 ** 0.5)
    tex = (tmp_path / "val" / "protocol.tex").read_text()
    assert r"52.0 $\pm$ 2.0 {\scriptsize (1.2)}" in tex and r"\toprule" in tex

    assert main(["report", str(root), "--select", "oracle", "--out", str(tmp_path / "oracle")]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("ORACLE SELECTION: hyperparameters chosen on TEST")
    assert _paper_rows(printed, "colored-digits")["erm / none"] == ["82.0 ± 2.0 (n=3; lr=0.01)"]
    assert "Selection oracle: ORACLE" in printed
    assert "Oracle selection" in (tmp_path / "oracle" / "report.md").read_text()

    # Without group labels on validation, val worst-class accuracy ranks the settings: here B's is higher. A run
    # written before it was recorded has it derived from its val group accuracies and sizes.
    for seed in range(3):
        b_groups = {"acc_group_0": 0.9, "acc_group_1": 0.9, "acc_group_2": 0.7, "acc_group_3": 0.8}
        for name, val in ((f"a-s{seed}", {"worst_class_acc": 0.6}), (f"b-s{seed}", b_groups)):
            path = root / name / "ffr_result.json"
            result = json.loads(path.read_text())
            result["val"].update(val)
            result["group_sizes"]["val"] = {"0": 10, "1": 10, "2": 10, "3": 30}
            path.write_text(json.dumps(result))
    assert main(["report", str(root), "--select", "val-worst-class"]) == 0
    assert _paper_rows(capsys.readouterr().out, "colored-digits")["erm / none"] == ["82.0 ± 2.0 (n=3; lr=0.01)"]

    assert main(["report", str(root), "--select", "none"]) == 0
    rows = _paper_rows(capsys.readouterr().out, "colored-digits")
    assert rows["erm / none [lr=0.001]"] == ["52.0 ± 2.0 (n=3)"]
    assert rows["erm / none [lr=0.01]"] == ["82.0 ± 2.0 (n=3)"]


def test_copies_of_a_run_count_once_and_disagreeing_copies_are_refused(tmp_path, capsys):
    import shutil

    root = tmp_path / "runs"
    run = make_run(root, "r-s0", dataset="colored-digits", variant="none", method="erm", stage=2, seed=0,
                   val_wga=[0.5], test_groups={0: 0.6, 1: 0.7}, group_names=DIGITS_GROUPS)
    shutil.copytree(run, tmp_path / "copy" / "r-s0")  # a copied folder
    (tmp_path / "link").symlink_to(run)  # a symlink
    assert main(["report", str(root), str(tmp_path / "copy"), str(tmp_path / "link")]) == 0
    rows = _paper_rows(capsys.readouterr().out, "colored-digits")
    assert rows["erm / none"] == ["60.0 (n=1)"]

    result = json.loads((tmp_path / "copy" / "r-s0" / "ffr_result.json").read_text())
    result["test"]["worst_group_acc"] = 0.1
    (tmp_path / "copy" / "r-s0" / "ffr_result.json").write_text(json.dumps(result))
    assert main(["report", str(root), str(tmp_path / "copy")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "two different results" in err
    assert str(run) in err and str(tmp_path / "copy" / "r-s0") in err


def test_local_train_with_default_mlflow_then_report_finds_each_run_once(tmp_path, capsys):
    """A user's path: `ffr train` (in-process executor, default MLflow tracking: a sqlite store and its artifact
    store beside the runs), then `ffr report` on the storage folder."""
    storage = tmp_path / "runs"
    args = ["train", "dataset=colored-digits", "backbone=small-cnn", "backbone_options={width: 8}",
            "pretrained=null", "image_size=16", "cache_in_memory=true", "epochs=1", "batch_size=256",
            "executor=local", f"storage_path={storage}"]
    assert main(args) == 0
    assert (storage / "mlflow.db").exists() and list((storage / "mlartifacts").rglob("ffr_result.json"))
    assert (storage / "mlartifacts" / runs.NOT_RUNS_MARKER).exists()  # discovery does not descend there
    assert [r.path for r in runs.find_runs(str(storage))] == [str(p.parent) for p in storage.glob("*/ffr_result.json")]
    capsys.readouterr()
    assert main(["report", str(storage), "--out", str(tmp_path / "report")]) == 0
    table = pd.read_csv(tmp_path / "report" / "report.csv")
    assert len(table) == 1 and table.loc[0, "path"] == str(storage / table.loc[0, "run"])
    rows = _paper_rows(capsys.readouterr().out, "colored-digits")
    assert list(rows["erm / none"][0].split("(")[1:]) == ["n=1)"]


def test_a_setting_run_twice_under_two_names_counts_each_seed_once(tmp_path, capsys):
    """A run named before names came from resolved options and its rerun: one setting, one seed, two names."""
    root = tmp_path / "runs"
    for name, test in (("old-name-s0", 0.6), ("new-name-s0", 0.6), ("new-name-s1", 0.8)):
        make_run(root, name, dataset="colored-digits", variant="none", method="erm", stage=2,
                 seed=int(name[-1]), val_wga=[0.5], test_groups={0: test, 1: 0.9}, group_names=DIGITS_GROUPS)
    with pytest.warns(UserWarning, match="one setting with one seed"):
        assert main(["report", str(root)]) == 0
    printed = capsys.readouterr().out
    assert _paper_rows(printed, "colored-digits")["erm / none"] == ["70.0 ± 14.1 (n=2)"]
    summary = printed.split("every setting: mean ± std over seeds")[1]
    assert "0,1 " in summary and "0,0" not in summary and "70.0 ± 14.1 (n=2)" in summary
