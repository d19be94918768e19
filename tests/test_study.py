"""``ffr study``: the plan (every configuration with every seed, shared runs once, finished runs skipped), the
searcher that starts a stage-2 run only after its stage 1, the shipped study configs, and a small study run."""

from __future__ import annotations

import os

import pytest

from ffr import runs
from ffr.cli import main
from ffr.config import load_config
from ffr.errors import FFRError
from ffr.study_command import cost_line
from tune.study import DependencyOrder, Job, count_line, parse_study, plan_study

TINY_TRAIN = {"dataset": "colored-digits", "backbone": "small-cnn", "backbone_options": {"width": 8},
              "pretrained": None, "image_size": 16, "epochs": 1, "batch_size": 256, "executor": "local",
              "cache_in_memory": True, "stage1": {"epochs": 1, "lr": 0.001}}


def _study(tmp_path, **over) -> dict:
    return {"name": "s", "storage_path": str(tmp_path), "train": dict(TINY_TRAIN),
            "datasets": [{"label": "digits", "synthetic_root": "/synthetic/seed-{seed}"}],
            "variants": ["none", "ffr"], "methods": ["erm", "groupdro"], "grid": {"lr": [0.001, 0.003]},
            "seeds": [0, 1, 2], **over}


def test_plan_runs_every_configuration_with_every_seed_and_shares_stage_1(tmp_path):
    plan = plan_study(parse_study(_study(tmp_path, method_grid={"groupdro": {"step_size": [0.01, 0.1]}})))
    jobs = list(plan.jobs.values())
    stage1 = [j for j in jobs if j.stage == 1]
    # 2 variants × (erm: 2 lr; groupdro: 2 lr × 2 step sizes) = 12 configurations × 3 seeds, + 1 stage 1 per seed
    assert plan.configurations == 12 and len(jobs) == 36 + 3 and len(stage1) == 3
    assert [j.stage for j in jobs[:3]] == [1, 1, 1]  # stage 1 first
    for seed in (0, 1, 2):
        assert {j.train["synthetic_root"] for j in jobs if j.train["seed"] == seed and j.train["variant"] == "ffr"} \
            == {f"/synthetic/seed-{seed}"}
        assert all(j.train["dataset_options"]["seed"] == seed for j in jobs if j.train["seed"] == seed)
    ffr = [j for j in jobs if j.stage == 2 and j.train["variant"] == "ffr"]
    assert len(ffr) == 18 and all(j.after in {s.run_name for s in stage1} for j in ffr)
    assert all(j.after is None and j.train["synthetic_root"] is None for j in jobs if j.train["variant"] == "none")
    # each configuration has all three seeds: n = 3 in every cell
    settings = {}
    for job in (j for j in jobs if j.stage == 2):
        key = (job.train["variant"], job.train["method"], job.train["lr"],
               job.train["method_hparams"].get("step_size"))
        settings.setdefault(key, set()).add(job.train["seed"])
    assert len(settings) == 12 and all(seeds == {0, 1, 2} for seeds in settings.values())
    assert all(j.train["method_hparams"] == {} for j in jobs if j.train["method"] == "erm" and j.stage == 2)
    line = count_line(plan)
    assert line.startswith("study 's': 39 runs (3 FFR stage-1 runs") and "12 configurations × 3 seeds" in line
    assert "0 finished already, 39 to train (39 epochs)" in line

    # a run two entries imply (a real-only run ignores the synthetic set) is planned once, in both entries
    two = plan_study(parse_study(_study(tmp_path, datasets=[{"label": "a", "synthetic_root": "/a/{seed}"},
                                                              {"label": "b", "synthetic_root": "/b/{seed}"}])))
    none = [j for j in two.jobs.values() if j.train["variant"] == "none"]
    assert len(none) == 12 and all(j.entries == ["a", "b"] for j in none)
    assert len([j for j in two.jobs.values() if j.stage == 1]) == 6


def test_finished_runs_are_not_planned_again(tmp_path):
    cfg = parse_study(_study(tmp_path, variants=["none"], methods=["erm"], grid={}, seeds=[0, 1]))
    first = plan_study(cfg)
    done = next(iter(first.jobs.values()))
    runs.write_result(runs.run_dir(first.folder, done.run_name), {"test": {"worst_group_acc": 0.5}})
    again = plan_study(cfg)
    assert [j.run_name for j in again.to_train] == [j.run_name for j in first.jobs.values() if j is not done]
    assert "1 finished already, 1 to train" in count_line(again)


def test_searcher_starts_a_stage_2_run_only_after_its_stage_1():
    jobs = [Job("s1", 1, {"v": 1}, 3), Job("a", 2, {"v": 2}, 2, after="s1"), Job("b", 2, {"v": 3}, 2),
            Job("c", 2, {"v": 4}, 2, after="s0"), Job("s0", 1, {}, 3, finished=True)]
    searcher = DependencyOrder(jobs)
    assert searcher.suggest("t1")["run"] == "s1"
    assert searcher.suggest("t2")["run"] == "b"  # a waits for s1; c's stage 1 (s0) is finished already
    assert searcher.suggest("t3")["run"] == "c"
    assert searcher.suggest("t4") is None  # nothing startable now, something pending: ask again later
    searcher.on_trial_complete("t1", {"finished": True})
    assert searcher.suggest("t5") == {"run": "a", "stage": 2, "train": {"v": 2}}
    assert searcher.suggest("t6") == DependencyOrder.FINISHED

    failing = DependencyOrder([Job("s1", 1, {}, 1), Job("a", 2, {}, 1, after="s1")])
    assert failing.suggest("t1")["run"] == "s1"
    failing.on_trial_complete("t1", None, error=True)
    assert failing.suggest("t2") == DependencyOrder.FINISHED and failing.skipped == ["a"]


@pytest.mark.parametrize("path", sorted(p for p in os.listdir("configs") if p.startswith("study-")))
def test_shipped_study_configs_plan(path, tmp_path):
    cfg = parse_study({**load_config(f"configs/{path}"), "storage_path": str(tmp_path)})  # theirs: a bucket
    plan = plan_study(cfg)
    experiments = [j for j in plan.jobs.values() if j.stage == 2]
    assert len(experiments) == plan.configurations * len(cfg.seeds)  # every configuration with every seed
    assert {j.train["seed"] for j in experiments} == set(cfg.seeds)
    assert count_line(plan).startswith(f"study {cfg.name!r}: ")
    # the cost line printed before anything starts: the cost preview's estimate of exactly the planned runs
    line, estimate = cost_line(plan)
    assert estimate.n_runs == len(plan.jobs) and estimate.epochs == sum(j.epochs for j in plan.jobs.values())
    assert line.startswith(f"estimated cost: {estimate.gpu_hours:.2f} ")
    if path.startswith("study-ffr-"):
        assert "GPU-hours on A100-80GB" in line  # FFR's grid: every bias ratio, variant and method, stage 1 shared
        assert len(plan.jobs) == plan.configurations * 3 + len(cfg.bias_ratios) * 3
        assert {j.train["dataset_options"]["bias_ratio"] for j in experiments} == set(cfg.bias_ratios)
        assert "split_file" in experiments[0].train["dataset_options"]


def test_study_config_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(FFRError, match="method_grid names method 'jtt'"):
        parse_study(_study(tmp_path, method_grid={"jtt": {"upweight": [5]}}))
    with pytest.raises(FFRError, match="grid.lr = 0.1; expected a non-empty list"):
        parse_study(_study(tmp_path, grid={"lr": 0.1}))
    assert main(["study", f"storage_path={tmp_path}", "variants=[nope]"]) == 2
    assert "unknown data variant 'nope'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def synthetic_roots(tmp_path_factory) -> str:
    import pipelines

    out = tmp_path_factory.mktemp("synthetic")
    for seed in (0, 1):
        pipelines.generate({"recipe": "colored-digits", "output": str(out / f"seed-{seed}"), "seed": seed,
                            "budget": {"per_group": 300}, "shard_size": 1200, "batch_size": 256, "runner": "local",
                            "progress": False})
    return str(out / "seed-{seed}")


@pytest.mark.slow
def test_a_small_study_runs_as_one_tune_run_resumes_and_prints_the_protocol_table(ray_cluster, synthetic_roots,
                                                                                   tmp_path, capsys):
    args = ["study", "--config", "configs/study-colored-digits.yaml", f"storage_path={tmp_path}",
            f"datasets=[{{label: tiny, synthetic_root: '{synthetic_roots}'}}]", "variants=[none, ffr]",
            "methods=[erm]", "train.epochs=1", "train.stage1={epochs: 1, lr: 0.001}", "train.image_size=16",
            "train.backbone_options={width: 8}", "mlflow.enabled=false"]
    assert main([*args, "seeds=[0]"]) == 0  # one seed first: an interrupted study, as far as the rest goes
    printed = capsys.readouterr().out
    assert printed.startswith("study 'colored-digits-small': 5 runs (1 FFR stage-1 runs")
    folder = tmp_path / "colored-digits-small"
    first = {p.parent.name: p.stat().st_mtime_ns for p in folder.glob(f"*/{runs.RESULT}")}
    assert len(first) == 5

    assert main([*args, "seeds=[0, 1]"]) == 0
    printed = capsys.readouterr().out
    assert "10 runs (2 FFR stage-1 runs" in printed and "5 finished already, 5 to train" in printed
    assert {n: t for n, t in ((p.parent.name, p.stat().st_mtime_ns) for p in folder.glob(f"*/{runs.RESULT}"))
            if n in first} == first  # finished runs were not trained again
    assert len(list(folder.glob(f"*/{runs.RESULT}"))) == 10
    table = printed.split("tiny: colored-digits  protocol table (val-wga)\n", 1)[1]
    rows = [line for line in table.splitlines()[2:] if line.strip()][:3]
    assert [r.split("  ")[0] for r in rows] == ["erm / none", "erm / FFR", "FFR, stage 1 only"]
    assert all("lr=" in r or r.startswith("FFR, stage 1") for r in rows)
    assert "Settings compared per cell: 1–2 (differing in lr)" in printed
    assert "(B, G) diagnostic" in printed and "10 runs: 10 finished, 0 failed" in printed
