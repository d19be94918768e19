"""FFR's ablations as options: synthetic-quality corruption of stage 1, frozen BatchNorm statistics in stage 2."""

import numpy as np
import pytest
import torch

import pipelines
from ffr import runs
from ffr.corruptions import Corrupt
from ffr.errors import FFRError
from ffr.training import loop, run_experiment
from ffr.training.config import method_stage, parse, pretrain_stage

TINY = {"dataset": "colored-digits", "dataset_options": {"bias_ratio": 0.95}, "backbone": "small-cnn",
        "backbone_options": {"width": 8}, "pretrained": None, "image_size": 32, "epochs": 1, "batch_size": 128,
        "executor": "local", "cache_in_memory": True}


def _bn_buffers(checkpoint: str) -> dict[str, torch.Tensor]:
    state = loop.load_state(checkpoint)["model"]
    return {k: v for k, v in state.items() if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


def _weights(checkpoint: str) -> dict[str, torch.Tensor]:
    return {k: v for k, v in loop.load_state(checkpoint)["model"].items() if k.endswith("weight")}


def test_frozen_bn_keeps_running_statistics_through_a_stage2_run(tmp_path):
    start = run_experiment({**TINY, "storage_path": str(tmp_path / "start")})["checkpoint"]
    runs = {frozen: run_experiment({**TINY, "init_checkpoint": start, "freeze_bn": frozen, "lr": 3e-3,
                                    "storage_path": str(tmp_path / f"frozen-{frozen}")})["checkpoint"]
            for frozen in (True, False)}
    before = _bn_buffers(start)
    assert before, "small-cnn has BatchNorm layers"
    frozen, free = _bn_buffers(runs[True]), _bn_buffers(runs[False])
    assert all(torch.equal(before[k], frozen[k]) for k in before)  # running stats untouched by training
    assert not all(torch.equal(before[k], free[k]) for k in before)  # the control: they move without the option
    trained = _weights(runs[True])
    assert not all(torch.equal(v, _weights(start)[k]) for k, v in trained.items())  # the model did train


def test_freeze_bn_is_a_stage2_setting():
    cfg = parse({**TINY, "variant": "ffr", "freeze_bn": True})
    assert method_stage(cfg).freeze_bn and not pretrain_stage(cfg).freeze_bn
    assert method_stage(cfg).run_name != method_stage(parse({**TINY, "variant": "ffr"})).run_name


def test_corruption_degrades_stage1_synthetic_images_and_names_its_own_run(tmp_path):
    synthetic = str(tmp_path / "synthetic")
    pipelines.generate({"recipe": "colored-digits", "output": synthetic, "budget": {"per_group": 250},
                        "runner": "local"})
    base = {**TINY, "variant": "ffr", "synthetic_root": synthetic, "epochs": 0, "storage_path": str(tmp_path / "r"),
            "stage1": {"epochs": 1}}
    corrupted = {**base, "stage1": {"epochs": 1, "corruption": "gaussian-noise", "corruption_severity": 5}}
    clean_spec, noisy_spec = pretrain_stage(parse(base)), pretrain_stage(parse(corrupted))
    assert clean_spec.corruption is None and (noisy_spec.corruption, noisy_spec.corruption_severity) == \
        ("gaussian-noise", 5)
    assert clean_spec.run_name != noisy_spec.run_name  # a corrupted stage 1 is never mistaken for the clean one

    result = run_experiment(corrupted)
    stage1 = runs.read_json(f"{tmp_path}/r/{noisy_spec.run_name}/config.json")
    assert stage1["corruption"] == "gaussian-noise" and result["stage1"]["stage"] == 1

    # What stage 1 trains on: every synthetic image degraded; validation (real) images never are.
    from ffr.training.data import load_experiment_data

    train = load_experiment_data(parse(corrupted)).stages[1].train
    clean = loop.image_dataset(train, 32)[0][0]
    noisy = loop.image_dataset(train, 32, corrupt=Corrupt("gaussian-noise", 5))[0][0]
    assert (train.source == 1).all() and float((clean - noisy).abs().mean()) > 0.1


@pytest.mark.parametrize("stage1, variant, message", [
    ({"corruption": "fog"}, "ffr", "unknown corruption 'fog'"),
    ({"corruption": "pixelate", "corruption_severity": 7}, "ffr", "severity 7 is out of range"),
    ({"corruption": "pixelate"}, "asb", "variant 'asb' has no stage 1"),
])
def test_bad_ablation_options_are_one_clear_error(stage1, variant, message):
    with pytest.raises(FFRError, match=message):
        parse({**TINY, "variant": variant, "stage1": stage1})


def test_corrupt_transform_runs_at_training_size():
    image = loop.make_transform(32, Corrupt("pixelate", 5))
    from PIL import Image

    out = image(Image.fromarray(np.full((64, 64, 3), 128, np.uint8)))
    assert tuple(out.shape) == (3, 32, 32)


def test_shipped_ablation_sweep_config_gives_one_valid_run_per_grid_point():
    """Every point of configs/sweep-ablation-colored-digits.yaml is a valid training config; 'no corruption'
    at three severities is one stage-1 run, every corrupted setting its own."""
    import copy
    import itertools

    from ffr.config import load_config, set_dotted
    from tune.sweep import base_train_config, parse_sweep

    sweep = parse_sweep(load_config("configs/sweep-ablation-colored-digits.yaml"))
    base = base_train_config(sweep)
    grid = {key: value[1] for key, value in sweep.search.items()}
    assert all(value[0] == "grid" for value in sweep.search.values())
    stage1_runs, stage2_runs = set(), set()
    for values in itertools.product(*grid.values()):
        train = copy.deepcopy(base)
        for key, value in zip(grid, values):
            set_dotted(train, key, value)
        cfg = parse(train)
        stage1_runs.add(pretrain_stage(cfg).run_name)
        stage2_runs.add(method_stage(cfg).run_name)
    assert len(stage1_runs) == 1 + 3 * 3 and len(stage2_runs) == 2 * (1 + 3 * 3)
