"""Cost previews: ``--dry-run`` on every shipped generate, train and sweep config prints per-group counts, runs and
epochs, GPU-hours and storage bytes, and starts, writes and (where published counts exist) reads nothing."""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

import pytest

from ffr.cli import main as ffr_main
from ffr.config import load_config
from ffr.cost import CostEstimate, Throughput
from ffr.errors import FFRError

REPO = Path(__file__).resolve().parents[1]
GENERATE = sorted(glob.glob(str(REPO / "configs" / "generate-*.yaml")))
TRAIN = sorted(glob.glob(str(REPO / "configs" / "train-*.yaml")))
SWEEP = sorted(glob.glob(str(REPO / "configs" / "sweep-*.yaml")))


@pytest.fixture
def nothing_starts(tmp_path, monkeypatch):
    """Runs in an empty folder (relative outputs land there); Ray, if anything starts it, fails the test."""
    import ray

    import ffr.ray_session

    def started(*args, **kwargs):
        raise AssertionError("a dry run started Ray")

    monkeypatch.setattr(ffr.ray_session, "ensure_ray", started)
    monkeypatch.setattr(ray, "init", started)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def _written(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _dry_run(command: str, config: str, capsys, *extra: str) -> str:
    assert ffr_main([command, "--dry-run", "--config", config, *extra]) == 0
    return capsys.readouterr().out


def _check_estimate(out: str) -> None:
    assert re.search(r"^estimate on \S+: [\d,.]+ (GPU|CPU)-hours.*; storage [\d,.]+ [KMGT]?B$", out, re.M), out
    assert "nothing is" in out.splitlines()[0]


@pytest.mark.parametrize("config", GENERATE, ids=lambda p: Path(p).stem)
def test_generate_dry_run_prints_counts_and_estimates_and_writes_nothing(config, nothing_starts, capsys):
    out = _dry_run("generate", config, capsys)
    assert re.search(r"^images per group \(\d+ groups, [\d,]+ in total\):$", out, re.M), out
    _check_estimate(out)
    assert _written(nothing_starts) == []  # e.g. colored-digits' relative demo_out/synthetic is not created


@pytest.mark.parametrize("config", TRAIN, ids=lambda p: Path(p).stem)
def test_train_dry_run_prints_counts_runs_epochs_and_estimates_and_writes_nothing(config, nothing_starts, capsys,
                                                                                    tmp_path):
    extra = []
    if load_config(config)["dataset"] == "folder":  # no published counts: the dry run reads (only) your data
        from dataset_fixtures import build_folder

        found = build_folder(tmp_path / "data")
        extra = [f"dataset_options.root={found['root']}", f"dataset_options.metadata={found['metadata']}"]
    out = _dry_run("train", config, capsys, *extra)
    assert re.search(r"^training runs: [12], [\d,]+ epochs in total$", out, re.M), out
    assert re.search(r"^  run 1: \S+  stage [12]: \w+ on (real|synthetic|real \+ synthetic), \d+ epochs × [\d,]+ "
                     r"images on \d+ (GPU|CPU worker)", out, re.M), out
    _check_estimate(out)
    assert _written(nothing_starts) == []  # no storage_path, run directory or MLflow store


@pytest.mark.parametrize("config", SWEEP, ids=lambda p: Path(p).stem)
def test_sweep_dry_run_counts_every_trial_and_writes_nothing(config, nothing_starts, capsys):
    train_config = load_config(config).get("train_config")  # relative to the repository, where the docs run it
    out = _dry_run("sweep", str(config), capsys, *([f"train_config={REPO / train_config}"] if train_config else []))
    assert re.search(r"^ffr sweep --dry-run: \S+, \d+ trials; nothing is started or written$", out, re.M), out
    _check_estimate(out)
    assert _written(nothing_starts) == []


def test_paper_generation_counts(capsys, nothing_starts):
    spuco = _dry_run("generate", str(REPO / "configs/generate-ffr-spuco-animals.yaml"), capsys)
    assert "images per group (8 groups, 160,000 in total):" in spuco
    assert len(re.findall(r"^  \S+/\S+ +20,000$", spuco, re.M)) == 8
    celeba = _dry_run("generate", str(REPO / "configs/generate-ffr-celeba.yaml"), capsys)
    assert "(4 groups, 24,421 in total)" in celeba and re.search(r"^  not Smiling/Female +7,743$", celeba, re.M)
    d3s = _dry_run("generate", str(REPO / "configs/generate-d3s-background.yaml"), capsys)
    assert "(10000 groups, 120,000 in total)" in d3s and "background templates: 200 images" in d3s
    assert "img2img 50 steps" in d3s


def test_estimates_follow_the_table_and_the_gpu(tmp_path):
    """GPU-hours scale with the table's rate; --throughput overrides one entry; every entry names its source."""
    from pipelines.cost import estimate_generation

    config = load_config(str(REPO / "configs/generate-ffr-utkface.yaml"))
    table = Throughput.load()
    a100 = estimate_generation(config, "a100", table)
    assert a100.gpu == "A100-80GB" and a100.images == 40_000 and a100.gpu_hours > 0
    # 40,000 × (25 steps + 3) / 48.6 image-steps per second
    assert a100.gpu_hours == pytest.approx(40_000 * 28 / 48.6 / 3600)
    mine = tmp_path / "mine.yaml"
    mine.write_text("generation:\n  sd1:\n    gpus:\n"
                    "      A100-80GB: {image_steps_per_s: 97.2, source: 'measured: x'}\n")
    faster = estimate_generation(config, "A100-80GB", Throughput.load(str(mine)))
    assert faster.gpu_hours == pytest.approx(a100.gpu_hours / 2) and "measured: x" in faster.render()
    assert estimate_generation(config, "H100", table).gpu_hours < a100.gpu_hours
    with pytest.raises(FFRError, match="GPU type 'B200' is not in the throughput table"):
        estimate_generation(config, "B200", table)
    for section in ("generation", "training"):
        for entry in table.data[section].values():
            for gpu, numbers in entry["gpus"].items():
                assert gpu in table.data["gpus"]
                assert numbers["source"].split(":")[0] in ("measured", "published", "guess"), numbers


def test_a_step_without_cfg_costs_one_denoiser_pass():
    """Rates measured with classifier-free guidance (cfg_in_rate) count a guidance <= 1 step at half the cost:
    LCM-LoRA at 4 steps and guidance 1 is 2 + 3 step-equivalents an image on SD1.x, not 4 + 3."""
    from pipelines.cost import estimate_generation

    config = load_config(str(REPO / "configs/generate-custom-lcm-lora.yaml"))
    table = Throughput.load()
    no_cfg = estimate_generation(config, "a100", table)
    assert no_cfg.gpu_hours == pytest.approx(no_cfg.images * (4 * 0.5 + 3) / 48.6 / 3600)
    config["generator"]["guidance_scale"] = 1.5  # CFG on: both passes a step (the family refuses > 2)
    with_cfg = estimate_generation(config, "a100", table)
    assert with_cfg.gpu_hours == pytest.approx(with_cfg.images * (4 + 3) / 48.6 / 3600)


def test_training_estimates_of_a_grid_count_a_shared_stage1_once():
    """One call for a list of configs (a sweep, a paper grid): FFR's stage 1 is shared by the methods of a seed."""
    from ffr.training.cost import estimate_training

    base = load_config(str(REPO / "configs/train-celeba-hq-ffr.yaml"))
    grid = [{**base, "method": m, "seed": s} for m in ("erm", "groupdro") for s in (0, 1)]
    est = estimate_training(grid)
    assert isinstance(est, CostEstimate) and est.n_runs == 2 + 4 and est.epochs == 6 * 50
    stage1 = [r for r in est.runs if "stage1" in r.name]
    assert len(stage1) == 2 and all(r.groups == {"not Smiling/Female": 4480, "not Smiling/Male": 4480,
                                                 "Smiling/Female": 4480, "Smiling/Male": 4480} for r in stage1)
    stage2 = [r for r in est.runs if "stage1" not in r.name]
    assert all(r.groups == {"not Smiling/Female": 54, "not Smiling/Male": 5335, "Smiling/Female": 7797,
                            "Smiling/Male": 79} for r in stage2)
    assert est.gpu_hours == pytest.approx(sum(r.gpu_hours for r in est.runs))
    assert est.storage_bytes == sum(r.storage_bytes for r in est.runs) > 6 * 2 * 4 * 25_000_000  # 2 ResNet-50 ckpts
    combined = CostEstimate.combine("study", [est, estimate_training(grid[:1])])
    assert combined.n_runs == est.n_runs  # the same runs are not counted twice
    assert os.linesep.join(combined.lines()) == combined.render().replace("\n", os.linesep)
